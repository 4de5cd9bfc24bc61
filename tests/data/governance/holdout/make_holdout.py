"""Build ``holdout.jsonl``: a second held-out labelled corpus for the PII and secret scanners.

Every positive is built from the published format of its type (see :data:`SOURCES`), and every label
comes from how the value was built: the generator knows where it put each value, so no scanner is
consulted. Rows follow the layout :func:`provenir.governance.accuracy.load_labelled` reads::

    {"record": {...}, "labels": [{"field": "a.b[2].c", "start": 0, "end": 9, "type": "EMAIL",
     "kind": "pii", "placeholder": false}], "carrier": "terraform", "group": "positive",
     "phone_regions": ["DE"]}

Usage::

    python make_holdout.py           # (re)write holdout.jsonl next to this file
    python make_holdout.py --check   # exit 1 when holdout.jsonl is not what generate() gives
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import ipaddress
import json
import os
import random
import string
import sys
import tempfile
import uuid
import zlib
from pathlib import Path
from typing import Any

import phonenumbers
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

OUT = Path(__file__).with_name("holdout.jsonl")
SEED = 777

SOURCES: dict[str, str] = {
    "EMAIL": "RFC 5322 section 3.4.1 addr-spec (dot-atom local part, domain) — https://www.rfc-editor.org/rfc/rfc5322#section-3.4.1",
    "PHONE": "libphonenumber metadata through the `phonenumbers` package: every number passes "
             "phonenumbers.is_valid_number and is written with its E164/INTERNATIONAL/NATIONAL formatters — "
             "https://github.com/google/libphonenumber",
    "CREDIT_CARD": "ISO/IEC 7812 Luhn check digit; IIN ranges from the card schemes' published tables as "
                   "collected at https://en.wikipedia.org/wiki/Payment_card_number (Visa 4; Mastercard 51-55 and "
                   "2221-2720; Amex 34/37, 15 digits; Discover 6011, 644-649, 65; JCB 3528-3589; Diners 36 and "
                   "300-305, 14 digits; UnionPay 62; Maestro 5018/5020/5038/6304/6759; Mir 2200-2204; RuPay "
                   "60/65/81/82/508). Test numbers: https://docs.stripe.com/testing#cards",
    "US_SSN": "SSA, 'Social Security Number Randomization' and POMS RM 10201.035: area not 000, 666 or "
              "900-999, group not 00, serial not 0000; 078-05-1120 and 219-09-9999 are the SSA's advertising "
              "numbers — https://www.ssa.gov/employer/randomization.html",
    "IBAN": "SWIFT IBAN Registry (country code, BBAN length and structure per country) and ISO 13616 "
            "mod-97-10 check digits — https://www.swift.com/standards/data-standards/iban-international-bank-account-number",
    "IP_ADDRESS": "RFC 791 dotted quad; RFC 4291 section 2.2 text forms (full, '::' compressed, mixed IPv4 "
                  "tail) and RFC 5952 canonical form — https://www.rfc-editor.org/rfc/rfc4291#section-2.2, "
                  "https://www.rfc-editor.org/rfc/rfc5952",
    "URL_CREDENTIALS": "RFC 3986 section 3.2.1 userinfo 'user:password@' in the authority — "
                       "https://www.rfc-editor.org/rfc/rfc3986#section-3.2.1",
    "AWS_ACCESS_KEY_ID": "IAM unique ID prefixes (AKIA long-term, ASIA STS), 20 chars; AWS's documented example "
                         "AKIAIOSFODNN7EXAMPLE — https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-unique-ids",
    "AWS_SECRET_ACCESS_KEY": "40-character secret access key; documented example wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY — "
                             "https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html",
    "AWS_SESSION_TOKEN": "STS temporary credentials (AccessKeyId ASIA…, SessionToken) — "
                         "https://docs.aws.amazon.com/STS/latest/APIReference/API_Credentials.html",
    "GOOGLE_API_KEY": "Google Cloud API keys: 'AIza' + 35 chars [A-Za-z0-9_-] — https://cloud.google.com/docs/authentication/api-keys",
    "PRIVATE_KEY": "RFC 7468 PEM labels (PRIVATE KEY, RSA/EC PRIVATE KEY) and OpenSSH's PROTOCOL.key format; "
                   "GCP service-account JSON key file — https://www.rfc-editor.org/rfc/rfc7468, "
                   "https://cloud.google.com/iam/docs/keys-create-delete",
    "AZURE_STORAGE_KEY": "Storage account access keys (64 bytes, base64, 88 chars) — "
                         "https://learn.microsoft.com/azure/storage/common/storage-account-keys-manage",
    "AZURE_CONNECTION_STRING": "Storage connection strings (DefaultEndpointsProtocol;AccountName;AccountKey) and Service "
                               "Bus (Endpoint=sb://…;SharedAccessKeyName;SharedAccessKey) — "
                               "https://learn.microsoft.com/azure/storage/common/storage-configure-connection-string",
    "AZURE_SAS_TOKEN": "Service SAS query parameters sv/ss/srt/sp/se/st/spr/sig — "
                       "https://learn.microsoft.com/rest/api/storageservices/create-service-sas",
    "AZURE_CLIENT_SECRET": "Entra ID client secrets: 40 chars with the 'Q~' marker at offset 3 — "
                           "https://learn.microsoft.com/purview/sit-defn-client-secret-api-key",
    "GITHUB_TOKEN": "GitHub token formats: ghp_/gho_/ghu_/ghs_/ghr_ + 30 base62 + 6-char base62 CRC32 of the random part, "
                    "zero-padded — https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/",
    "GITHUB_FINE_GRAINED_TOKEN": "github_pat_ + 22 + '_' + 59 — https://github.blog/security/application-security/introducing-fine-grained-personal-access-tokens-for-github/",
    "GITLAB_TOKEN": "GitLab token prefixes (glpat-, 20 chars) — https://docs.gitlab.com/ee/security/token_overview.html#token-prefixes",
    "SLACK_TOKEN": "Slack token types (xoxb- bot, xoxp- user, xapp- app-level) — https://api.slack.com/authentication/token-types",
    "SLACK_WEBHOOK": "Incoming webhooks https://hooks.slack.com/services/T…/B…/… — https://api.slack.com/messaging/webhooks",
    "DISCORD_WEBHOOK": "Webhook URL https://discord.com/api/webhooks/{id}/{token} — https://discord.com/developers/docs/resources/webhook",
    "TELEGRAM_BOT_TOKEN": "Bot token '{bot_id}:{35 chars}' — https://core.telegram.org/bots/api#authorizing-your-bot",
    "STRIPE_KEY": "API keys sk_live_/rk_live_ (docs test key sk_test_4eC39HqLyjWDarjtT1zdp7dc is an example) — https://docs.stripe.com/keys",
    "SHOPIFY_TOKEN": "Admin API access tokens shpat_ + 32 hex — https://shopify.dev/docs/apps/auth/access-token-types",
    "TWILIO_TOKEN": "Account auth token: 32 hex chars — https://www.twilio.com/docs/iam/api/authtoken",
    "SENDGRID_API_KEY": "API keys 'SG.' + 22 + '.' + 43 — https://www.twilio.com/docs/sendgrid/ui/account-and-settings/api-keys",
    "MAILCHIMP_API_KEY": "32 hex + '-us' + datacenter — https://mailchimp.com/developer/marketing/guides/quick-start/",
    "NPM_TOKEN": "npm_ + 30 base62 + 6-char CRC32 checksum (GitHub's scheme) — https://github.blog/changelog/2021-09-23-npm-has-a-new-access-token-format/",
    "PYPI_TOKEN": "API tokens: 'pypi-' + base64url macaroon whose header names pypi.org — https://pypi.org/help/#apitoken",
    "DOCKER_HUB_TOKEN": "Personal access tokens dckr_pat_ — https://docs.docker.com/security/for-developers/access-tokens/",
    "HUGGINGFACE_TOKEN": "User access tokens hf_ + 34 letters — https://huggingface.co/docs/hub/security-tokens",
    "OPENAI_API_KEY": "Keys sk-proj-… / legacy sk-…T3BlbkFJ… — https://platform.openai.com/docs/api-reference/authentication",
    "ANTHROPIC_API_KEY": "Keys sk-ant-api03-… (108 chars, ending AA) — https://docs.anthropic.com/en/api/getting-started",
    "GROQ_API_KEY": "gsk_ + 52 chars — https://console.groq.com/docs/quickstart",
    "REPLICATE_API_TOKEN": "r8_ + 37 chars — https://replicate.com/docs/reference/http#authentication",
    "DATABRICKS_TOKEN": "Personal access tokens dapi + 32 hex — https://docs.databricks.com/en/dev-tools/auth/pat.html",
    "DATADOG_KEY": "API keys 32 hex under DD_API_KEY — https://docs.datadoghq.com/account_management/api-app-keys/",
    "NEW_RELIC_KEY": "User keys NRAK- + 27 chars — https://docs.newrelic.com/docs/apis/intro-apis/new-relic-api-keys/",
    "DIGITALOCEAN_TOKEN": "dop_v1_ + 64 hex — https://docs.digitalocean.com/reference/api/create-personal-access-token/",
    "LINEAR_API_KEY": "lin_api_ + 40 chars — https://developers.linear.app/docs/graphql/working-with-the-graphql-api",
    "VAULT_TOKEN": "Service tokens hvs. + base62 — https://developer.hashicorp.com/vault/docs/concepts/tokens#token-prefixes",
    "JWT": "RFC 7519 with an RFC 7515 HS256 signature (HMAC-SHA256, base64url); the jwt.io sample token is an example — "
           "https://www.rfc-editor.org/rfc/rfc7519",
    "PASSWORD_ASSIGNMENT": "A literal password assigned to a password-named key (.env, YAML, .properties, code) — "
                           "https://cwe.mitre.org/data/definitions/798.html",
    "HIGH_ENTROPY_SECRET": "Random hex/base64 values under secret-named keys (client_secret, auth_token, signing_key) — "
                           "https://cwe.mitre.org/data/definitions/798.html",
    "negatives": "Sentry DSN keys are public by design (https://docs.sentry.io/concepts/key-terms/dsn-explainer/); ISBN-13 "
                 "check digit (ISO 2108); RFC 4122 UUIDs; SemVer 2.0.0 (https://semver.org); UPS 1Z tracking numbers; "
                 "RFC 7468 public keys/certificates",
}

B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
ALNUM = string.ascii_letters + string.digits
URLSAFE = ALNUM + "-_"
B64 = ALNUM + "+/"
HEX = "0123456789abcdef"
UPPER32 = string.ascii_uppercase + "234567"


# --------------------------------------------------------------------------------------------- values

class Item:
    """A value placed in a record, with its labels relative to the value's start."""

    def __init__(self, value: str, etype: str | None, kind: str, *, placeholder: bool = False,
                 key: str = "VALUE", region: str | None = None, labels: list | None = None,
                 multiline: bool = False) -> None:
        self.value, self.type, self.kind, self.key, self.region = value, etype, kind, key, region
        self.multiline = multiline or "\n" in value
        self.labels = labels if labels is not None else (
            [(0, len(value), etype, kind, placeholder)] if etype else [])


def rs(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d - 9 if d > 9 else d
        total += d
    return str((10 - total % 10) % 10)


CARD_SCHEMES = [  # (name, prefixes, length)
    ("visa", ["4"], 16), ("visa19", ["4"], 19), ("mc5", ["51", "52", "53", "54", "55"], 16),
    ("mc2", [str(p) for p in (2221, 2300, 2450, 2599, 2630, 2720)], 16), ("amex", ["34", "37"], 15),
    ("discover", ["6011", "644", "647", "649", "65"], 16), ("jcb", ["3528", "3540", "3566", "3589"], 16),
    ("diners", ["36", "300", "305"], 14), ("unionpay", ["62"], 16), ("unionpay19", ["62"], 19),
    ("maestro", ["6759", "5018", "5020", "5038", "6304"], 16), ("mir", ["2200", "2201", "2204"], 16),
    ("rupay", ["60", "81", "82", "508"], 16),
]


def card_number(rng: random.Random, scheme: tuple) -> str:
    name, prefixes, length = scheme
    body = rng.choice(prefixes)
    body += rs(rng, string.digits, length - 1 - len(body))
    return body + luhn_digit(body)


def fmt_card(rng: random.Random, num: str) -> str:
    style = rng.choice(["compact", "space", "dash"])
    if style == "compact":
        return num
    sep = " " if style == "space" else "-"
    if len(num) == 15:
        groups = [num[:4], num[4:10], num[10:]]
    elif len(num) == 14:
        groups = [num[:4], num[4:10], num[10:]]
    else:
        groups = [num[i:i + 4] for i in range(0, len(num), 4)]
    return sep.join(groups)


def ssn(rng: random.Random) -> tuple[str, str, str]:
    while True:
        area = rng.randint(1, 899)
        if area != 666:
            break
    return f"{area:03d}", f"{rng.randint(1, 99):02d}", f"{rng.randint(1, 9999):04d}"


IBAN_FORMATS = {  # SWIFT IBAN registry BBAN structures
    "DE": "18n", "FR": "10n,11c,2n", "ES": "20n", "IT": "1a,10n,12c", "NL": "4a,10n", "GB": "4a,14n",
    "BE": "12n", "AT": "16n", "CH": "5n,12c", "PL": "24n", "PT": "21n", "IE": "4a,14n", "SE": "20n",
    "DK": "14n", "NO": "11n", "FI": "14n", "LU": "3n,13c", "CZ": "20n", "HU": "24n", "GR": "7n,16c",
    "RO": "4a,16c", "SA": "2n,18c", "HR": "17n", "SI": "15n", "EE": "16n",
}


def iban_check(country: str, bban: str) -> str:
    digits = "".join(str(int(ch, 36)) for ch in bban + country + "00")
    return f"{98 - int(digits) % 97:02d}"


def iban(rng: random.Random, country: str, *, valid: bool = True) -> str:
    bban = ""
    for part in IBAN_FORMATS[country].split(","):
        n, t = int(part[:-1]), part[-1]
        bban += rs(rng, {"n": string.digits, "a": string.ascii_uppercase,
                         "c": string.digits + string.ascii_uppercase}[t], n)
    check = iban_check(country, bban)
    if not valid:
        check = f"{(int(check) + rng.randint(1, 90)) % 97 + 2:02d}"
        if check == iban_check(country, bban):
            check = f"{(int(check) + 1) % 97 + 2:02d}"
    return country + check + bban


def fmt_iban(rng: random.Random, value: str) -> str:
    if rng.random() < 0.5:
        return value
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4))


PHONE_REGIONS = ["US", "GB", "DE", "FR", "ES", "IT", "NL", "IN", "JP", "BR", "MX", "ZA"]


def phone(rng: random.Random, region: str) -> tuple[str, str | None]:
    """A valid number of ``region`` and, for a national-format one, the region it needs."""
    kind = rng.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind)
    nat = phonenumbers.national_significant_number(example)
    for _ in range(200):
        keep = min(4, len(nat) - 4)
        cand = nat[:keep] + rs(rng, string.digits, len(nat) - keep)
        num = phonenumbers.parse(f"+{example.country_code}{cand}")
        if phonenumbers.is_valid_number(num) and phonenumbers.region_code_for_number(num) == region:
            break
    else:
        raise RuntimeError(f"no valid number for {region}")
    style = rng.choice(["E164", "INTERNATIONAL", "NATIONAL"])
    fmt = getattr(phonenumbers.PhoneNumberFormat, style)
    text = phonenumbers.format_number(num, fmt)
    if region in ("US", "GB") and kind == phonenumbers.PhoneNumberType.FIXED_LINE and rng.random() < 0.4:
        text += rng.choice([" ext. ", " x", " ext "]) + str(rng.randint(10, 9999))
    return text, (region if style == "NATIONAL" else None)


FIRST = ["amelie", "jonas", "lucia", "kenji", "priya", "thabo", "mateo", "sofia", "lars", "chiara",
         "noah", "ines", "rahul", "yuki", "camila", "oliver", "lea", "diego", "anika", "marek"]
LAST = ["durand", "schneider", "garcia", "tanaka", "sharma", "nkosi", "rossi", "jansen", "silva",
        "lopez", "brown", "muller", "kowalski", "dubois", "fernandez", "bianchi", "smith", "moreau"]
DOMAINS = ["posteo.de", "orange.fr", "telefonica.es", "fastweb.it", "ziggo.nl", "btinternet.co.uk",
           "acme-logistics.com", "rediffmail.in", "nifty.jp", "uol.com.br", "prodigy.net.mx",
           "mweb.co.za", "northwind.io", "contoso-mail.eu", "mail.kestrel.dev", "fjordbank.no"]


def email(rng: random.Random) -> str:
    f, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice([f"{f}.{last}", f"{f[0]}{last}", f"{f}_{last}{rng.randint(1, 99)}",
                        f"{f}.{last}+{rng.choice(['billing', 'ops', 'news'])}", f"{last}.{f[0]}", f"{f}-{last}"])
    return f"{local}@{rng.choice(DOMAINS)}"


def ip_value(rng: random.Random) -> str:
    style = rng.choice(["v4", "v4", "v4", "v6c", "v6full", "v6upper", "v6mapped", "v6ll"])
    if style == "v4":
        return f"{rng.choice([23, 45, 62, 81, 91, 104, 151, 172, 185, 192, 203, 212])}.{rng.randint(0, 255)}." \
               f"{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if style == "v6mapped":
        return f"::ffff:{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    groups = [rng.choice(["2a01", "2a02", "2001", "2604", "2c0f", "2406"]), f"{rng.randint(0, 0xffff):x}"]
    groups += [f"{rng.randint(0, 0xffff):x}" for _ in range(6)]
    if style == "v6ll":
        groups = ["fe80", "0", "0", "0"] + groups[4:]
    z = rng.randint(2, 4)
    for k in range(z, z + rng.randint(1, 3)):
        groups[k] = "0"
    addr = ipaddress.IPv6Address(":".join(groups))
    if style == "v6full":
        return addr.exploded
    if style == "v6upper":
        return addr.exploded.upper() if rng.random() < 0.5 else str(addr).upper()
    return str(addr)


def url_cred(rng: random.Random) -> Item:
    scheme, host = rng.choice([("postgresql", "db.internal:5432/orders"), ("mysql", "mysql-primary:3306/shop"),
                               ("mongodb+srv", "cluster0.abcde.mongodb.net/app"), ("redis", "cache-1:6379/0"),
                               ("amqp", "rabbit.local:5672/vhost"), ("https", "nexus.corp.lan/repository/pypi/"),
                               ("ftp", "files.partner-exchange.net/inbound")])
    user = rng.choice(["svc_orders", "deploy", "app", "readonly", "etl_user", "admin"])
    pw = rs(rng, ALNUM + "-_.~", rng.randint(12, 24))
    value = f"{scheme}://{user}:{pw}@{host}"
    a = len(scheme) + 3
    return Item(value, None, "pii", key="DATABASE_URL", labels=[
        (a, a + len(user) + 1 + len(pw), "URL_CREDENTIALS", "pii", False),
        (a + len(user) + 1, a + len(user) + 1 + len(pw), "URL_CREDENTIALS", "secret", False)])


def gh_checksum(random_part: str) -> str:
    n = zlib.crc32(random_part.encode())
    out = ""
    while n:
        n, r = divmod(n, 62)
        out = B62[r] + out
    return out.rjust(6, "0")


def gh_token(rng: random.Random, prefix: str) -> str:
    body = rs(rng, B62, 30)
    return f"{prefix}_{body}{gh_checksum(body)}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_token(rng: random.Random) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    iat = rng.randint(1_700_000_000, 1_760_000_000)
    payload = b64url(json.dumps({"sub": f"usr_{rs(rng, HEX, 12)}", "iat": iat, "exp": iat + 3600,
                                 "scope": rng.choice(["orders:read", "admin", "billing:write"])},
                                separators=(",", ":")).encode())
    key = rs(rng, ALNUM, 32).encode()
    sig = b64url(hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    return f"{header}.{payload}.{sig}"


JWT_IO = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2"
          "MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")


def _is_prime(n: int, rng: random.Random) -> bool:
    if n < 2:
        return False
    for p in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for _ in range(24):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(rng: random.Random, bits: int) -> int:
    while True:
        c = rng.getrandbits(bits) | (1 << (bits - 1)) | (1 << (bits - 2)) | 1
        if c % 65537 != 1 and _is_prime(c, rng):
            return c


def rsa_key(rng: random.Random, bits: int = 2048) -> rsa.RSAPrivateKey:
    e = 65537
    p, q = _prime(rng, bits // 2), _prime(rng, bits // 2)
    d = pow(e, -1, (p - 1) * (q - 1))
    nums = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q))
    return nums.private_key()


def _ssh_str(b: bytes) -> bytes:
    return len(b).to_bytes(4, "big") + b


def openssh_ed25519(rng: random.Random) -> str:
    """An unencrypted OpenSSH private key (PROTOCOL.key) built byte by byte, deterministically."""
    seed = rng.randbytes(32)
    key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    pub = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    pub_blob = _ssh_str(b"ssh-ed25519") + _ssh_str(pub)
    check = rng.randbytes(4)
    priv = check + check + _ssh_str(b"ssh-ed25519") + _ssh_str(pub) + _ssh_str(seed + pub) + _ssh_str(b"deploy")
    priv += bytes(range(1, 1 + (-len(priv)) % 8))
    blob = (b"openssh-key-v1\0" + _ssh_str(b"none") + _ssh_str(b"none") + _ssh_str(b"") + (1).to_bytes(4, "big")
            + _ssh_str(pub_blob) + _ssh_str(priv))
    body = base64.b64encode(blob).decode()
    lines = [body[i:i + 70] for i in range(0, len(body), 70)]
    return "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END OPENSSH PRIVATE KEY-----"


def pem_private_key(rng: random.Random, *, rsa_pool: list) -> str:
    style = rng.choice(["ec_pkcs8", "ec_trad", "ed_pkcs8", "openssh", "rsa_pkcs8", "rsa_trad"])
    if style == "openssh":
        return openssh_ed25519(rng)
    if style.startswith("rsa"):
        key = rsa_pool[rng.randrange(len(rsa_pool))]
    elif style.startswith("ec"):
        curve = rng.choice([ec.SECP256R1(), ec.SECP384R1()])
        key = ec.derive_private_key(rng.randrange(1, 2 ** 250), curve)
    else:
        key = ed25519.Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    fmt = serialization.PrivateFormat.PKCS8 if style.endswith("pkcs8") else serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode().strip()


def public_material(rng: random.Random) -> str:
    style = rng.choice(["ec_pub", "ed_pub", "ssh_pub"])
    if style == "ec_pub":
        key = ec.derive_private_key(rng.randrange(1, 2 ** 250), ec.SECP256R1()).public_key()
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode().strip()
    key = ed25519.Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)).public_key()
    if style == "ed_pub":
        return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode().strip()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " ci-deploy-key"


def certificate(rng: random.Random) -> str:
    import datetime

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, rng.choice(["api.internal", "ca.corp.lan", "mqtt.edge"]))])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(rng.getrandbits(64) + 1).not_valid_before(start)
            .not_valid_after(start + datetime.timedelta(days=365)).sign(key, None))
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


def secret_item(rng: random.Random, etype: str, ctx: dict) -> Item:
    """A live value of secret type ``etype`` under its conventional key."""
    def it(value: str, key: str) -> Item:
        return Item(value, etype, "secret", key=key)

    if etype == "AWS_ACCESS_KEY_ID":
        return it(rng.choice(["AKIA", "AKIA", "ASIA"]) + rs(rng, UPPER32, 16), "AWS_ACCESS_KEY_ID")
    if etype == "AWS_SECRET_ACCESS_KEY":
        return it(rs(rng, B64, 40), "AWS_SECRET_ACCESS_KEY")
    if etype == "AWS_SESSION_TOKEN":
        return it(rng.choice(["IQoJb3JpZ2luX2Vj", "FwoGZXIvYXdzE"]) + rs(rng, B64, rng.randint(300, 420)) + "=",
                  "AWS_SESSION_TOKEN")
    if etype == "GOOGLE_API_KEY":
        return it("AIza" + rs(rng, URLSAFE, 35), rng.choice(["GOOGLE_API_KEY", "MAPS_API_KEY", "FIREBASE_API_KEY"]))
    if etype == "PRIVATE_KEY":
        return Item(pem_private_key(rng, rsa_pool=ctx["rsa"]), etype, "secret", key="PRIVATE_KEY", multiline=True)
    if etype == "AZURE_STORAGE_KEY":
        return it(base64.b64encode(rng.randbytes(64)).decode(), "AZURE_STORAGE_KEY")
    if etype == "AZURE_CONNECTION_STRING":
        if rng.random() < 0.6:
            acct = rng.choice(["stprodlogs", "mediaassets01", "backupweu"])
            v = (f"DefaultEndpointsProtocol=https;AccountName={acct};AccountKey="
                 f"{base64.b64encode(rng.randbytes(64)).decode()};EndpointSuffix=core.windows.net")
        else:
            v = (f"Endpoint=sb://{rng.choice(['orders-bus', 'telemetry-ns'])}.servicebus.windows.net/;"
                 f"SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey={base64.b64encode(rng.randbytes(32)).decode()}")
        return it(v, "AZURE_STORAGE_CONNECTION_STRING")
    if etype == "AZURE_SAS_TOKEN":
        sig = base64.b64encode(rng.randbytes(32)).decode().replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
        v = (f"sv=2022-11-02&ss=bfqt&srt=sco&sp=rwdlacupiytfx&se=2026-0{rng.randint(1, 9)}-1{rng.randint(0, 9)}T"
             f"0{rng.randint(0, 9)}:00:00Z&st=2025-01-01T00:00:00Z&spr=https&sig={sig}")
        return it(v, "AZURE_SAS_TOKEN")
    if etype == "AZURE_CLIENT_SECRET":
        return it(rs(rng, ALNUM, 3) + "8Q~" + rs(rng, ALNUM + "_~.-", 34), "AZURE_CLIENT_SECRET")
    if etype == "GITHUB_TOKEN":
        return it(gh_token(rng, rng.choice(["ghp", "ghp", "gho", "ghu", "ghs", "ghr"])), "GITHUB_TOKEN")
    if etype == "GITHUB_FINE_GRAINED_TOKEN":
        return it("github_pat_" + rs(rng, ALNUM, 22) + "_" + rs(rng, ALNUM, 59), "GH_PAT")
    if etype == "GITLAB_TOKEN":
        return it("glpat-" + rs(rng, URLSAFE, 20), "GITLAB_TOKEN")
    if etype == "SLACK_TOKEN":
        kind = rng.choice(["b", "p", "app"])
        if kind == "b":
            v = f"xoxb-{rs(rng, string.digits, 12)}-{rs(rng, string.digits, 13)}-{rs(rng, ALNUM, 24)}"
        elif kind == "p":
            v = f"xoxp-{rs(rng, string.digits, 12)}-{rs(rng, string.digits, 12)}-{rs(rng, string.digits, 13)}-{rs(rng, HEX, 32)}"
        else:
            v = f"xapp-1-A{rs(rng, UPPER32, 10)}-{rs(rng, string.digits, 13)}-{rs(rng, HEX, 64)}"
        return it(v, "SLACK_BOT_TOKEN")
    if etype == "SLACK_WEBHOOK":
        return it(f"https://hooks.slack.com/services/T{rs(rng, UPPER32, 8)}/B{rs(rng, UPPER32, 10)}/{rs(rng, ALNUM, 24)}",
                  "SLACK_WEBHOOK_URL")
    if etype == "DISCORD_WEBHOOK":
        return it(f"https://discord.com/api/webhooks/{rng.randint(10**17, 10**19 - 1)}/{rs(rng, URLSAFE, 68)}",
                  "DISCORD_WEBHOOK_URL")
    if etype == "TELEGRAM_BOT_TOKEN":
        return it(f"{rng.randint(10**8, 10**10 - 1)}:AA{rs(rng, URLSAFE, 33)}", "TELEGRAM_BOT_TOKEN")
    if etype == "STRIPE_KEY":
        return it(rng.choice(["sk_live_", "rk_live_"]) + rs(rng, ALNUM, rng.choice([24, 99])), "STRIPE_SECRET_KEY")
    if etype == "SHOPIFY_TOKEN":
        return it("shpat_" + rs(rng, HEX, 32), "SHOPIFY_ACCESS_TOKEN")
    if etype == "TWILIO_TOKEN":
        return it(rs(rng, HEX, 32), "TWILIO_AUTH_TOKEN")
    if etype == "SENDGRID_API_KEY":
        return it(f"SG.{rs(rng, URLSAFE, 22)}.{rs(rng, URLSAFE, 43)}", "SENDGRID_API_KEY")
    if etype == "MAILCHIMP_API_KEY":
        return it(f"{rs(rng, HEX, 32)}-us{rng.randint(1, 21)}", "MAILCHIMP_API_KEY")
    if etype == "NPM_TOKEN":
        return it(gh_token(rng, "npm"), "NPM_TOKEN")
    if etype == "PYPI_TOKEN":
        return it("pypi-AgEIcHlwaS5vcmc" + rs(rng, URLSAFE, rng.randint(140, 180)), "PYPI_API_TOKEN")
    if etype == "DOCKER_HUB_TOKEN":
        return it("dckr_pat_" + rs(rng, URLSAFE, 27), "DOCKERHUB_TOKEN")
    if etype == "HUGGINGFACE_TOKEN":
        return it("hf_" + rs(rng, string.ascii_letters, 34), "HF_TOKEN")
    if etype == "OPENAI_API_KEY":
        if rng.random() < 0.5:
            return it("sk-proj-" + rs(rng, URLSAFE, 74) + "T3BlbkFJ" + rs(rng, URLSAFE, 74), "OPENAI_API_KEY")
        return it("sk-" + rs(rng, ALNUM, 20) + "T3BlbkFJ" + rs(rng, ALNUM, 20), "OPENAI_API_KEY")
    if etype == "ANTHROPIC_API_KEY":
        return it("sk-ant-api03-" + rs(rng, URLSAFE, 93) + "AA", "ANTHROPIC_API_KEY")
    if etype == "GROQ_API_KEY":
        return it("gsk_" + rs(rng, ALNUM, 52), "GROQ_API_KEY")
    if etype == "REPLICATE_API_TOKEN":
        return it("r8_" + rs(rng, ALNUM, 37), "REPLICATE_API_TOKEN")
    if etype == "DATABRICKS_TOKEN":
        return it("dapi" + rs(rng, HEX, 32), "DATABRICKS_TOKEN")
    if etype == "DATADOG_KEY":
        return it(rs(rng, HEX, 32), "DD_API_KEY")
    if etype == "NEW_RELIC_KEY":
        return it("NRAK-" + rs(rng, string.ascii_uppercase + string.digits, 27), "NEW_RELIC_API_KEY")
    if etype == "DIGITALOCEAN_TOKEN":
        return it("dop_v1_" + rs(rng, HEX, 64), "DIGITALOCEAN_TOKEN")
    if etype == "LINEAR_API_KEY":
        return it("lin_api_" + rs(rng, ALNUM, 40), "LINEAR_API_KEY")
    if etype == "VAULT_TOKEN":
        return it("hvs." + rs(rng, ALNUM + "_-", 90), "VAULT_TOKEN")
    if etype == "JWT":
        return it(jwt_token(rng), rng.choice(["ACCESS_TOKEN", "ID_TOKEN", "SESSION_JWT"]))
    if etype == "PASSWORD_ASSIGNMENT":
        pw = rng.choice([rs(rng, ALNUM + "!#%&*+-=?@^_", rng.randint(12, 20)),
                         rng.choice(["Winter", "Kestrel", "Falcon", "Orbit"]) + str(rng.randint(10, 99)) + "!" + rs(rng, ALNUM, 6)])
        return it(pw, rng.choice(["DB_PASSWORD", "POSTGRES_PASSWORD", "SMTP_PASSWORD", "ADMIN_PASSWORD", "password"]))
    if etype == "HIGH_ENTROPY_SECRET":
        v = rng.choice([rs(rng, HEX, 64), rs(rng, ALNUM, 40), base64.b64encode(rng.randbytes(32)).decode()])
        return it(v, rng.choice(["client_secret", "auth_token", "signing_key", "webhook_secret", "SESSION_SECRET"]))
    raise KeyError(etype)


SECRET_CHOICE = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_API_KEY", "PRIVATE_KEY",
                 "AZURE_STORAGE_KEY", "AZURE_CONNECTION_STRING", "AZURE_SAS_TOKEN", "AZURE_CLIENT_SECRET",
                 "GITHUB_TOKEN", "GITHUB_FINE_GRAINED_TOKEN", "GITLAB_TOKEN", "SLACK_TOKEN", "SLACK_WEBHOOK",
                 "DISCORD_WEBHOOK", "TELEGRAM_BOT_TOKEN", "STRIPE_KEY", "SHOPIFY_TOKEN", "TWILIO_TOKEN",
                 "SENDGRID_API_KEY", "MAILCHIMP_API_KEY", "NPM_TOKEN", "PYPI_TOKEN", "DOCKER_HUB_TOKEN",
                 "HUGGINGFACE_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GROQ_API_KEY", "REPLICATE_API_TOKEN",
                 "DATABRICKS_TOKEN", "DATADOG_KEY", "NEW_RELIC_KEY", "DIGITALOCEAN_TOKEN", "LINEAR_API_KEY",
                 "VAULT_TOKEN", "JWT", "PASSWORD_ASSIGNMENT", "HIGH_ENTROPY_SECRET"]
PII_CHOICE = ["EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL_CREDENTIALS"]


def pii_item(rng: random.Random, etype: str, *, prose: bool = False) -> Item:
    if etype == "EMAIL":
        return Item(email(rng), "EMAIL", "pii", key=rng.choice(["contact_email", "billing_email", "owner", "notify_to"]))
    if etype == "PHONE":
        text, region = phone(rng, rng.choice(PHONE_REGIONS))
        return Item(text, "PHONE", "pii", key=rng.choice(["support_phone", "mobile", "tel", "oncall_number"]), region=region)
    if etype == "CREDIT_CARD":
        return Item(fmt_card(rng, card_number(rng, rng.choice(CARD_SCHEMES))), "CREDIT_CARD", "pii",
                    key=rng.choice(["card_number", "pan", "cc_number"]))
    if etype == "US_SSN":
        a, g, s = ssn(rng)
        compact = rng.random() < 0.3
        return Item(f"{a}{g}{s}" if compact else f"{a}-{g}-{s}", "US_SSN", "pii",
                    key="ssn" if compact else rng.choice(["ssn", "tax_id", "employee_ssn"]))
    if etype == "IBAN":
        return Item(fmt_iban(rng, iban(rng, rng.choice(sorted(IBAN_FORMATS)))), "IBAN", "pii",
                    key=rng.choice(["iban", "payout_iban", "account"]))
    if etype == "IP_ADDRESS":
        return Item(ip_value(rng), "IP_ADDRESS", "pii", key=rng.choice(["client_ip", "remote_addr", "peer", "source_ip"]))
    if etype == "URL_CREDENTIALS":
        return url_cred(rng)
    raise KeyError(etype)


def placeholder_item(rng: random.Random) -> Item:
    """Publisher-documented example values, labelled with placeholder=True."""
    choice = rng.randrange(9)
    if choice == 0:
        return Item("AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID", "secret", placeholder=True, key="AWS_ACCESS_KEY_ID")
    if choice == 1:
        return Item("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY", "secret", placeholder=True,
                    key="AWS_SECRET_ACCESS_KEY")
    if choice == 2:
        return Item(JWT_IO, "JWT", "secret", placeholder=True, key="ID_TOKEN")
    if choice == 3:
        return Item("sk_test_4eC39HqLyjWDarjtT1zdp7dc", "STRIPE_KEY", "secret", placeholder=True, key="STRIPE_SECRET_KEY")
    if choice == 4:
        return Item("ghp_" + "x" * 36, "GITHUB_TOKEN", "secret", placeholder=True, key="GITHUB_TOKEN")
    if choice == 5:
        return Item("xoxb-" + "x" * 12 + "-" + "x" * 13 + "-" + "x" * 24, "SLACK_TOKEN", "secret", placeholder=True,
                    key="SLACK_BOT_TOKEN")
    if choice == 6:
        return Item(rng.choice(["4111 1111 1111 1111", "4242424242424242", "5555 5555 5555 4444", "378282246310005",
                                "6011111111111117"]), "CREDIT_CARD", "pii", placeholder=True, key="card_number")
    if choice == 7:
        return Item(rng.choice(["078-05-1120", "219-09-9999"]), "US_SSN", "pii", placeholder=True, key="ssn")
    return Item("sk-ant-api03-" + "x" * 93 + "AA", "ANTHROPIC_API_KEY", "secret", placeholder=True, key="ANTHROPIC_API_KEY")


# ------------------------------------------------------------------------------------------- carriers

class T:
    """A string leaf built from literal text and :class:`Item` values."""

    def __init__(self, *parts: Any) -> None:
        self.parts = list(parts)

    def build(self) -> tuple[str, list]:
        out, labels = "", []
        for p in self.parts:
            if isinstance(p, Item):
                for s, e, etype, kind, ph in p.labels:
                    labels.append((len(out) + s, len(out) + e, etype, kind, ph))
                out += p.value
            else:
                out += p
        return out, labels


def joined(lines: list) -> T:
    """``lines`` (each a str, an Item or a list of both) joined by newlines into one T."""
    parts: list = []
    for i, line in enumerate(lines):
        if i:
            parts.append("\n")
        parts += line if isinstance(line, list) else [line]
    return T(*parts)


def c_terraform(rng, items):
    lines = [f'resource "{rng.choice(["aws_lambda_function", "kubernetes_secret", "azurerm_app_service"])}" '
             f'"{rng.choice(["api", "worker", "ingest"])}" {{', '  name = "orders-api"']
    for it in items:
        k = it.key.lower()
        if it.multiline:
            lines.append([f"  {k} = <<-EOT\n", it, "\n  EOT"])
        else:
            lines.append([f'  {k} = "', it, '"'])
    lines.append("}")
    return {"path": "infra/main.tf", "content": joined(lines)}


def c_dockerfile(rng, items):
    lines = ["FROM python:3.12-slim", "WORKDIR /srv"]
    for i, it in enumerate(items):
        kw = "ARG" if i % 2 else "ENV"
        lines.append([f"{kw} {it.key.upper()}=", it])
    lines += ["COPY . .", 'CMD ["gunicorn", "app:server"]']
    return {"file": "Dockerfile", "text": joined(lines)}


def c_gha(rng, items):
    lines = ["name: deploy", "on:", "  push:", "    branches: [main]", "jobs:", "  release:",
             "    runs-on: ubuntu-latest", "    env:"]
    for it in items:
        if it.multiline:
            lines.append([f"      {it.key.upper()}: |\n"] + _indent(it, "        "))
        else:
            lines.append([f"      {it.key.upper()}: ", it])
    lines += ["    steps:", "      - uses: actions/checkout@v4", "      - run: make publish"]
    return {"workflow": ".github/workflows/deploy.yml", "yaml": joined(lines)}


def _indent(it: Item, pad: str) -> list:
    """A multi-line item re-indented as YAML/heredoc content: one Item per line, labels kept whole."""
    text = it.value.replace("\n", "\n" + pad)
    return [pad, Item(text, it.type, it.kind, key=it.key, labels=[(0, len(text), it.type, it.kind, it.labels[0][4])] if it.labels else [])]


def c_compose(rng, items):
    lines = ["services:", "  api:", "    image: registry.local/api:latest", "    environment:"]
    listed = rng.random() < 0.5
    for it in items:
        if listed:
            lines.append([f"      - {it.key.upper()}=", it])
        else:
            lines.append([f"      {it.key.upper()}: \"", it, "\""])
    return {"compose": joined(lines)}


def c_notebook(rng, items):
    src = ["import os\n", "import requests\n"]
    for it in items:
        src.append(T(f'os.environ["{it.key.upper()}"] = "', it, '"\n'))
    src.append(T("resp = requests.get(BASE, timeout=10)"))
    return {"nbformat": 4, "cells": [{"cell_type": "markdown", "source": ["# Pull the latest export\n"]},
                                     {"cell_type": "code", "execution_count": 3, "source": src, "outputs": []}]}


def c_sql(rng, items):
    cols = ", ".join(it.key.lower() for it in items)
    parts: list = [f"INSERT INTO {rng.choice(['customers', 'integrations', 'payouts'])} (id, {cols}) VALUES ({rng.randint(10, 99)}, "]
    for i, it in enumerate(items):
        parts += (["'", it, "'"] if i == len(items) - 1 else ["'", it, "', "])
    parts.append(");")
    return {"migration": "seed_0042.sql", "statement": T(*parts)}


# types whose value has no prefix of its own: only the key it sits under says what it is, so they are
# never written as a bare "Authorization: Bearer" value
KEY_TYPED = {"AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_KEY", "AZURE_CLIENT_SECRET", "TWILIO_TOKEN", "DATADOG_KEY",
             "HIGH_ENTROPY_SECRET", "PASSWORD_ASSIGNMENT"}


def c_http(rng, items):
    lines = [f"POST /v2/{rng.choice(['accounts', 'webhooks', 'sync'])} HTTP/1.1", "Host: api.internal",
             "Content-Type: application/json", "User-Agent: curl/8.5.0"]
    body_items = []
    for it in items:
        if it.kind == "secret" and not it.multiline and it.type not in KEY_TYPED and rng.random() < 0.5 and not any(
                isinstance(x, list) and x[0].startswith("Authorization") for x in lines):
            lines.append(["Authorization: Bearer ", it])
        elif it.type == "IP_ADDRESS":
            lines.append(["X-Forwarded-For: ", it])
        else:
            body_items.append(it)
    lines.append("")
    body: list = ["{"]
    for i, it in enumerate(body_items):
        val = it
        if it.multiline:
            esc = it.value.replace("\n", "\\n")
            val = Item(esc, it.type, it.kind, labels=[(0, len(esc), it.type, it.kind, it.labels[0][4])] if it.labels else [])
        body += [f'"{it.key.lower()}": "', val, '"' + (", " if i < len(body_items) - 1 else "")]
    body.append("}")
    lines.append(body)
    return {"capture": joined(lines)}


def c_properties(rng, items):
    lines = ["# application.properties", "server.port=8080"]
    for it in items:
        if it.multiline:
            continue
        lines.append([f"app.{it.key.lower().replace('_', '.')}=", it])
    return {"resource": "src/main/resources/application.properties", "body": joined(lines)}


def c_toml(rng, items):
    lines = ["[tool.deploy]", 'region = "eu-west-1"', "", "[tool.deploy.credentials]"]
    for it in items:
        if it.multiline:
            lines.append([f'{it.key.lower()} = """\n', it, '\n"""'])
        else:
            lines.append([f'{it.key.lower()} = "', it, '"'])
    return {"pyproject": joined(lines)}


def c_xml(rng, items):
    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<configuration>", "  <appSettings>"]
    for it in items:
        if it.multiline:
            continue
        lines.append([f'    <add key="{it.key}" value="', it, '" />'])
    lines += ["  </appSettings>", "</configuration>"]
    return {"web_config": joined(lines)}


NAMES = ["Ana Pereira", "Tom Becker", "Julie Martin", "Ravi Iyer", "Sipho Dlamini", "Hana Sato", "Marco Conti"]


def c_markdown(rng, items):
    head = "| Name | " + " | ".join(it.key.replace("_", " ") for it in items) + " |"
    sep = "|---|" + "---|" * len(items)
    row: list = [f"| {rng.choice(NAMES)} | "]
    for it in items:
        row += [it, " | "]
    row[-1] = " |"
    return {"doc": joined(["## Contacts", "", head, sep, row])}


PHRASES = {
    "en": {"EMAIL": "reach me at ", "PHONE": "my number is ", "CREDIT_CARD": "charge the card ", "US_SSN": "my SSN is ",
           "IBAN": "please wire it to IBAN ", "IP_ADDRESS": "the login came from ", "URL_CREDENTIALS": "the DSN is ",
           "secret": "I set {key} to "},
    "fr": {"EMAIL": "écrivez-moi à ", "PHONE": "mon numéro est le ", "CREDIT_CARD": "débitez la carte ",
           "US_SSN": "mon SSN américain est ", "IBAN": "virez le montant sur l'IBAN ", "IP_ADDRESS": "la connexion venait de ",
           "URL_CREDENTIALS": "la chaîne de connexion est ", "secret": "j'ai mis {key} à "},
    "de": {"EMAIL": "schreiben Sie an ", "PHONE": "meine Telefonnummer lautet ", "CREDIT_CARD": "belasten Sie die Karte ",
           "US_SSN": "meine US-SSN ist ", "IBAN": "bitte überweisen Sie auf die IBAN ", "IP_ADDRESS": "der Zugriff kam von ",
           "URL_CREDENTIALS": "die Verbindungs-URL ist ", "secret": "ich habe {key} auf "},
    "es": {"EMAIL": "escríbame a ", "PHONE": "mi teléfono es ", "CREDIT_CARD": "cargue la tarjeta ",
           "US_SSN": "mi SSN de EE. UU. es ", "IBAN": "transfiera al IBAN ", "IP_ADDRESS": "el acceso vino de ",
           "URL_CREDENTIALS": "la URL de conexión es ", "secret": "puse {key} en "},
}
OPEN = {"en": "Hello, quick note about my account. ", "fr": "Bonjour, petite précision sur mon dossier. ",
        "de": "Guten Tag, kurz zu meinem Konto. ", "es": "Hola, una aclaración sobre mi cuenta. "}
TAIL = {"de": " gesetzt", "en": "", "fr": "", "es": ""}


def _sentences(lang: str, items: list) -> list:
    parts: list = []
    for it in items:
        t = it.type or "URL_CREDENTIALS"
        phrase = PHRASES[lang]["secret"].format(key=it.key) if it.kind == "secret" else PHRASES[lang][t]
        if it.multiline:
            parts += [phrase.strip() + ":\n", it, "\n"]
        else:
            parts += [phrase, it, (TAIL[lang] if it.kind == "secret" else "") + ". "]
    return parts


def c_prose(rng, items):
    lang = rng.choice(["fr", "de", "es"])
    return {"lang": lang, "text": T(OPEN[lang], *_sentences(lang, items), {"fr": "Merci.", "de": "Danke.", "es": "Gracias."}[lang])}


def c_email(rng, items):
    name = rng.choice(NAMES)
    body = [f"Hi {rng.choice(['team', 'Sam', 'all'])},\n\nFollowing up on yesterday's call. "]
    sig_items = [it for it in items if it.type in ("EMAIL", "PHONE")]
    other = [it for it in items if it not in sig_items]
    body += _sentences("en", other)
    body.append(f"\n\nBest regards,\n{name}\n")
    for it in sig_items:
        body += ["Tel: " if it.type == "PHONE" else "Mail: ", it, "\n"]
    return {"subject": "Re: onboarding", "body": T(*body)}


def c_log(rng, items):
    lines = []
    for it in items:
        if it.multiline:
            esc = it.value.replace("\n", "\\n")
            lines.append(["level=error msg=\"loaded key\" value=\"", Item(esc, it.type, it.kind,
                          labels=[(0, len(esc), it.type, it.kind, it.labels[0][4])] if it.labels else []), "\""])
            continue
        lines.append([f"level={rng.choice(['info', 'warn', 'debug'])} svc=gateway {it.key.lower()}=", it,
                      f" status={rng.choice([200, 401, 403])}"])
    return {"stream": "stdout", "lines": joined(lines)}


def c_traceback(rng, items):
    lines = ["Traceback (most recent call last):", '  File "/srv/app/client.py", line 88, in connect',
             "    session.login(**settings)"]
    for it in items:
        if it.multiline:
            continue
        lines.append([f"    {it.key.lower()} = '", it, "'"])
    lines.append("PermissionError: upstream refused the credentials")
    return {"exception": joined(lines)}


def c_csv(rng, items):
    head = "id," + ",".join(it.key.lower() for it in items if not it.multiline)
    row: list = [f"{rng.randint(1, 99)},"]
    for it in [x for x in items if not x.multiline]:
        row += [it, ","]
    row.pop()
    return {"csv": joined([head, row])}


def c_chat(rng, items):
    return {"messages": [
        {"role": "user", "content": T("I can't get the integration to work, here is what I have. ", *_sentences("en", items))},
        {"role": "assistant", "content": T("Thanks. Please rotate those values now; they are visible in this chat.")}]}


def c_json(rng, items):
    style = rng.randrange(3)
    if style == 0:
        return {"account": {"profile": {it.key.lower(): T(it) for it in items}, "tier": "gold"}}
    if style == 1:
        return {"data": {"contacts": [{"name": rng.choice(NAMES), it.key.lower(): T(it)} for it in items]}}
    return {"settings": {"integrations": {"primary": {it.key.lower(): T(it) for it in items}}, "version": 3}}


CARRIERS = {"terraform": c_terraform, "dockerfile": c_dockerfile, "github_actions": c_gha, "docker_compose": c_compose,
            "notebook": c_notebook, "sql": c_sql, "http": c_http, "properties": c_properties, "toml": c_toml,
            "xml": c_xml, "markdown": c_markdown, "email": c_email, "log": c_log, "traceback": c_traceback,
            "csv": c_csv, "chat": c_chat, "prose": c_prose, "json": c_json}
MULTILINE_OK = ["terraform", "github_actions", "toml", "chat", "email", "json", "prose", "http"]


def finish(record: Any, path: str = "") -> tuple[Any, list]:
    """Replace every :class:`T` leaf by its string; labels carry the leaf's field path."""
    if isinstance(record, T):
        text, spans = record.build()
        return text, [{"field": path, "start": s, "end": e, "type": t, "kind": k, "placeholder": ph}
                      for s, e, t, k, ph in spans]
    if isinstance(record, dict):
        out, labels = {}, []
        for k, v in record.items():
            out[k], lab = finish(v, f"{path}.{k}" if path else k)
            labels += lab
        return out, labels
    if isinstance(record, list):
        out, labels = [], []
        for i, v in enumerate(record):
            item, lab = finish(v, f"{path}[{i}]")
            out.append(item)
            labels += lab
        return out, labels
    return record, []


def make_row(rng: random.Random, carrier: str, items: list, group: str) -> dict:
    if any(it.multiline for it in items) and carrier not in MULTILINE_OK:
        carrier = rng.choice(MULTILINE_OK)
    if carrier in ("properties", "xml", "csv", "traceback") and any(it.multiline for it in items):
        carrier = "json"
    # a compact SSN only appears where its key or phrase says SSN
    if any(it.type == "US_SSN" and "-" not in it.value for it in items):
        for it in items:
            if it.type == "US_SSN":
                it.key = "ssn"
    record, labels = finish(CARRIERS[carrier](rng, items))
    row = {"record": record, "labels": labels, "carrier": carrier, "group": group}
    regions = sorted({it.region for it in items if it.region})
    if regions:
        row["phone_regions"] = regions
    return row


# ------------------------------------------------------------------------------------------ negatives

def negative_values(rng: random.Random, cls: str) -> list[tuple[str, str]]:
    """(key, value) pairs of one hard-negative class: things that resemble a sensitive value but are not."""
    if cls == "luhn_outside_iin":
        out = []
        for _ in range(2):
            body = rng.choice(["7", "0"]) + rs(rng, string.digits, 14)
            out.append(("loyalty_card", body + luhn_digit(body)))
        return out
    if cls == "order_tracking":
        ups = "1Z" + rs(rng, string.ascii_uppercase + string.digits, 6) + rs(rng, string.digits, 10)
        return [("tracking", ups), ("order_ref", f"ORD-{rng.randint(2019, 2025)}-{rs(rng, string.digits, 6)}")]
    if cls == "uuid":
        return [("request_id", str(uuid.UUID(int=rng.getrandbits(128), version=4))),
                ("trace_id", str(uuid.UUID(int=rng.getrandbits(128), version=4)))]
    if cls == "hash":
        return [("commit", rs(rng, HEX, 40)), ("sha256", rs(rng, HEX, 64))]
    if cls == "base64_prose":
        text = rng.choice(["The quarterly report is attached for review.", "Meeting moved to the large room on floor two.",
                           "Please keep the release notes short and friendly."])
        return [("payload", base64.b64encode(text.encode()).decode())]
    if cls == "version":
        return [("version", f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}"),
                ("build", f"{rng.randint(10, 30)}.{rng.randint(0, 9)}.{rng.randint(1000, 29999)}.{rng.randint(256, 4000)}")]
    if cls == "datetime":
        return [("created", f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                            f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z"),
                ("elapsed", f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}.{rng.randint(0, 999):03d}")]
    if cls == "isbn":
        body = "978" + rs(rng, string.digits, 9)
        check = (10 - sum((1 if i % 2 == 0 else 3) * int(d) for i, d in enumerate(body)) % 10) % 10
        full = body + str(check)
        return [("isbn", f"{full[:3]}-{full[3]}-{full[4:8]}-{full[8:12]}-{full[12]}")]
    if cls == "iban_bad_checksum":
        return [("iban", fmt_iban(rng, iban(rng, rng.choice(sorted(IBAN_FORMATS)), valid=False)))]
    if cls == "ssn_invalid":
        area, group, serial = ssn(rng)
        bad = rng.choice([("000", group, serial), ("666", group, serial), (str(rng.randint(900, 999)), group, serial),
                          (area, "00", serial), (area, group, "0000")])
        return [("ssn", "-".join(bad))]
    if cls == "ip_invalid":
        return [("host", rng.choice([f"{rng.randint(256, 999)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                                     f"{rng.randint(1, 223)}.{rng.randint(0, 255)}.{rng.randint(300, 999)}.1",
                                     f"2001:db8:{rng.randint(1, 0xfff):x}:::1", f"fe80::{rs(rng, HEX, 5)}::1"]))]
    if cls == "placeholder":
        return [(rng.choice(["GITHUB_TOKEN", "API_KEY", "DB_PASSWORD", "STRIPE_SECRET_KEY"]),
                 rng.choice(["<YOUR_TOKEN>", "${{ secrets.DEPLOY_TOKEN }}", "changeme", "xxxxxxxxxxxxxxxx",
                             "${DB_PASSWORD}", "<your-api-key-here>", "REPLACE_ME", "********"]))]
    if cls == "github_bad_checksum":
        tok = gh_token(rng, rng.choice(["ghp", "gho", "ghs"]))
        last = tok[-1]
        tok = tok[:-1] + B62[(B62.index(last) + rng.randint(1, 61)) % 62]
        return [("ref_token", tok)]
    if cls == "public_key":
        return [("public_key", public_material(rng))]
    if cls == "certificate":
        return [("certificate", certificate(rng))]
    if cls == "sentry_dsn":
        return [("SENTRY_DSN", f"https://{rs(rng, HEX, 32)}@o{rng.randint(10000, 999999)}.ingest.sentry.io/{rng.randint(1000000, 9999999)}")]
    raise KeyError(cls)


NEG_CLASSES = ["luhn_outside_iin", "order_tracking", "uuid", "hash", "base64_prose", "version", "datetime", "isbn",
               "iban_bad_checksum", "ssn_invalid", "ip_invalid", "placeholder", "github_bad_checksum", "public_key",
               "certificate", "sentry_dsn"]


def negative_row(rng: random.Random, cls: str) -> dict:
    items = [Item(v, None, "pii", key=k) for k, v in negative_values(rng, cls)]
    carriers = ["terraform", "github_actions", "toml", "json", "http"] if any(it.multiline for it in items) else [
        c for c in CARRIERS if c not in ("prose", "chat", "email")]
    return make_row(rng, rng.choice(carriers), items, f"negative:{cls}")


# ------------------------------------------------------------------------------------------- assembly

def generate() -> list[dict]:
    rng = random.Random(SEED)
    ctx = {"rsa": [rsa_key(rng, 2048) for _ in range(3)]}
    names = list(CARRIERS)
    rows: list[dict] = []
    for etype in PII_CHOICE:  # single-type PII rows
        for _ in range(22):
            rows.append(make_row(rng, rng.choice(names), [pii_item(rng, etype)], "positive"))
    for etype in SECRET_CHOICE:  # single-type secret rows
        for _ in range(8):
            rows.append(make_row(rng, rng.choice(names), [secret_item(rng, etype, ctx)], "positive"))
    for _ in range(180):  # several types in one record
        items = []
        for _ in range(rng.randint(2, 4)):
            if rng.random() < 0.5:
                items.append(pii_item(rng, rng.choice(PII_CHOICE)))
            else:
                items.append(secret_item(rng, rng.choice(SECRET_CHOICE), ctx))
        keys = set()
        for it in items:  # one key name per record
            while it.key in keys:
                it.key = f"{it.key}_{len(keys)}"
            keys.add(it.key)
        rows.append(make_row(rng, rng.choice(names), items, "mixed"))
    for _ in range(40):  # documented example values
        rows.append(make_row(rng, rng.choice(names), [placeholder_item(rng)], "positive"))
    for cls in NEG_CLASSES:
        for _ in range(12):
            rows.append(negative_row(rng, cls))
    rng.shuffle(rows)
    return rows


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when holdout.jsonl is stale")
    args = parser.parse_args(argv)
    text = render(generate())
    if args.check:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        print(f"{OUT} is up to date")
        return 0
    fd, tmp = tempfile.mkstemp(dir=OUT.parent, prefix=".holdout.", suffix=".jsonl")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600
    os.replace(tmp, OUT)
    print(f"wrote {OUT} ({text.count(chr(10))} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
