"""Writes corpus.jsonl: the labelled governance corpus (seeded; run to regenerate).

Each line: {"record": <a training record>, "labels": [{"field", "type", "value", "placeholder"}]}.
Values are generated to be *valid* for their type (Luhn + IIN for cards, mod-97 for IBANs,
``phonenumbers``-valid phones, allowed SSN areas, real JWT structure), and the hard negatives are
generated to look close (Luhn-invalid numbers, bad IBAN checksums, invalid SSN areas, UUIDs, git
SHAs, versions, ISBNs, dates, vendor example keys, base64 of prose, key=value prose). Labels come
from how a value was built, never from running the scanner.

    python tests/data/governance/make_corpus.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import string
import uuid
import zlib
from pathlib import Path

import phonenumbers

HERE = Path(__file__).parent
rng = random.Random(20261125)
ALNUM = string.ascii_letters + string.digits
UPPER_DIGITS = string.ascii_uppercase + "234567"

FIRST = ["alice", "bob", "carol", "dmitri", "eve", "fatima", "goran", "hana", "ivan", "jun", "kofi", "lena"]
LAST = ["smith", "ng", "garcia", "okafor", "muller", "rossi", "tanaka", "kowalski", "silva", "dubois"]
DOMAINS = ["example.com", "acme.io", "mail.co.uk", "uni-heidelberg.de", "corp.example.org", "gmail.com",
           "startup.ai", "post.fr"]
TOPICS = ["sorting a list", "the French revolution", "gradient descent", "a haiku about rain",
          "SQL joins", "photosynthesis", "the TCP handshake", "unit testing", "bread baking",
          "binary search", "the water cycle", "compound interest"]


def rand(chars: str, n: int) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


# -- PII generators ----------------------------------------------------------------------------------
def email() -> str:
    sep = rng.choice([".", "_", "", "-", "+news"])
    return f"{rng.choice(FIRST)}{sep}{rng.choice(LAST)}{rng.randint(1, 99) if rng.random() < .4 else ''}@{rng.choice(DOMAINS)}"


def luhn_complete(prefix: str, length: int) -> str:
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        candidate = body + check
        total = 0
        for i, ch in enumerate(reversed(candidate)):
            d = int(ch)
            if i % 2:
                d = d * 2 - 9 if d > 4 else d * 2
            total += d
        if total % 10 == 0:
            return candidate
    raise AssertionError


def card() -> str:
    prefix, length = rng.choice([("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("37", 15), ("34", 15),
                                 ("6011", 16), ("3530", 16), ("4", 13)])
    number = luhn_complete(prefix, length)
    style = rng.choice(["plain", "space", "dash"])
    if style == "plain":
        return number
    sep = " " if style == "space" else "-"
    groups = [4, 6, 5] if length == 15 else ([4, 4, 4, 4] if length == 16 else [4, 4, 5])
    out, i = [], 0
    for g in groups:
        out.append(number[i:i + g])
        i += g
    return sep.join(out)


def bad_card() -> str:
    number = luhn_complete("4", 16)
    last = (int(number[-1]) + rng.randint(1, 9)) % 10
    return number[:-1] + str(last)


def ssn() -> str:
    while True:
        area = rng.randint(1, 899)
        if area == 666:
            continue
        value = f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"
        if value.replace("-", "") not in {"078051120", "219099999", "123456789"}:
            return value if rng.random() < .85 else value.replace("-", " ")


def bad_ssn() -> str:
    area = rng.choice(["000", "666", f"{rng.randint(900, 999)}"])
    return f"{area}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


IBAN_FORMATS = {"DE": (8, 10, "n"), "GB": (None, None, "gb"), "FR": (None, None, "fr"), "NL": (None, None, "nl"),
                "ES": (20, 0, "n"), "IT": (None, None, "it"), "CH": (17, 0, "n"), "BE": (12, 0, "n")}


def _iban_bban(country: str) -> str:
    if country == "DE":
        return rand(string.digits, 18)
    if country == "GB":
        return rand(string.ascii_uppercase, 4) + rand(string.digits, 14)
    if country == "FR":
        return rand(string.digits, 23)
    if country == "NL":
        return rand(string.ascii_uppercase, 4) + rand(string.digits, 10)
    if country == "ES":
        return rand(string.digits, 20)
    if country == "IT":
        return rand(string.ascii_uppercase, 1) + rand(string.digits, 22)
    if country == "CH":
        return rand(string.digits, 17)
    return rand(string.digits, 12)  # BE


def _iban_check(country: str, bban: str) -> str:
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{98 - number % 97:02d}"


def iban(valid: bool = True) -> str:
    country = rng.choice(list(IBAN_FORMATS))
    bban = _iban_bban(country)
    check = _iban_check(country, bban)
    if not valid:
        check = f"{(int(check) + rng.randint(1, 50)) % 97 + 2:02d}"
        if check == _iban_check(country, bban):
            check = f"{(int(check) + 1) % 98 + 2:02d}"
    value = country + check + bban
    if rng.random() < .5:
        value = " ".join(value[i:i + 4] for i in range(0, len(value), 4))
    return value


PHONE_REGIONS = ["US", "GB", "DE", "FR", "IN", "JP", "BR", "AU", "ES", "CA"]


def phone() -> str:
    region = rng.choice(PHONE_REGIONS)
    kind = rng.choice([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
    example = phonenumbers.example_number_for_type(region, kind)
    national = str(example.national_number)
    for _ in range(200):
        digits = national[:3] + rand(string.digits, len(national) - 3)
        number = phonenumbers.parse(f"+{example.country_code}{digits}")
        if phonenumbers.is_valid_number(number):
            break
    else:
        number = example
    if region in ("US", "CA") and rng.random() < .5:
        fmt = rng.choice(["({}) {}-{}", "{}-{}-{}", "{}.{}.{}"])
        n = str(number.national_number)
        return fmt.format(n[:3], n[3:6], n[6:])
    style = rng.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.E164])
    return phonenumbers.format_number(number, style)


def ipv4() -> str:
    kind = rng.random()
    if kind < .3:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    if kind < .5:
        return f"192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return f"{rng.randint(11, 223)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def ipv6() -> str:
    import ipaddress

    raw = ipaddress.IPv6Address(rng.getrandbits(128) | (0x2001 << 112))
    return raw.compressed if rng.random() < .6 else raw.exploded


def url_with_credentials() -> tuple[str, str]:
    user = rng.choice(FIRST)
    password = rand(ALNUM, rng.randint(8, 16))
    scheme = rng.choice(["postgres", "mysql", "https", "redis", "amqp", "ftp"])
    host = rng.choice(["db.internal", "10.0.3.7", "cache.prod.example.net", "broker.local"])
    return f"{scheme}://{user}:{password}@{host}:{rng.randint(1000, 9999)}/app", f"{user}:{password}"


# -- secret generators ------------------------------------------------------------------------------
def aws_key_id() -> str:
    return rng.choice(["AKIA", "ASIA"]) + rand(UPPER_DIGITS, 16)


def aws_secret() -> str:
    return rand(ALNUM + "/+", 40)


BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


def github_token() -> str:
    """GitHub's documented format: prefix_ + 30 random base62 + base62 CRC32 of those 30 (6 chars).

    https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/
    """
    body = rand(ALNUM, 30)
    value, checksum = zlib.crc32(body.encode()), ""
    while value:
        value, rest = divmod(value, 62)
        checksum = BASE62[rest] + checksum
    return rng.choice(["ghp_", "gho_", "ghs_", "ghu_"]) + body + checksum.rjust(6, "0")


def github_fine() -> str:
    return "github_pat_" + rand(ALNUM, 22) + "_" + rand(ALNUM, 59)


def slack_token() -> str:
    return f"xoxb-{rand(string.digits, 12)}-{rand(string.digits, 13)}-{rand(ALNUM, 24)}"


def slack_webhook() -> str:
    return f"https://hooks.slack.com/services/T{rand(UPPER_DIGITS, 10)}/B{rand(UPPER_DIGITS, 10)}/{rand(ALNUM, 24)}"


def stripe_key() -> str:
    return rng.choice(["sk_live_", "rk_live_", "sk_test_"]) + rand(ALNUM, rng.choice([24, 99]))


def google_key() -> str:
    return "AIza" + rand(ALNUM + "_-", 35)


def openai_key() -> str:
    if rng.random() < .5:
        return "sk-" + rand(ALNUM, 20) + "T3BlbkFJ" + rand(ALNUM, 20)
    return "sk-proj-" + rand(ALNUM + "_-", 74) + "T3BlbkFJ" + rand(ALNUM + "_-", 74)


def anthropic_key() -> str:
    return "sk-ant-api03-" + rand(ALNUM + "_-", 93) + "AA"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt() -> str:
    header = _b64url(json.dumps({"alg": rng.choice(["HS256", "RS256"]), "typ": "JWT"}).encode())
    payload = _b64url(json.dumps({"sub": str(rng.randint(1, 10**6)), "iat": rng.randint(1_600_000_000, 1_800_000_000),
                                  "scope": rng.choice(["read", "admin", "write"])}).encode())
    return f"{header}.{payload}.{_b64url(rng.randbytes(32))}"


def pem() -> str:
    kind = rng.choice(["RSA ", "EC ", "", "OPENSSH "])
    body = base64.b64encode(rng.randbytes(rng.choice([120, 300]))).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}PRIVATE KEY-----\n{lines}\n-----END {kind}PRIVATE KEY-----"


def password() -> str:
    return rand(ALNUM, rng.randint(3, 6)) + rng.choice(["!", "#", "_", "2024", "$x"]) + rand(ALNUM, rng.randint(2, 6))


def high_entropy() -> str:
    return rand(ALNUM, rng.randint(24, 40))


JWT_IO = ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0Ij"
          "oxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c")


# -- building records ---------------------------------------------------------------------------------
def item(kind: str) -> tuple[str, list[tuple[str, str, bool]]]:
    """A sentence containing one entity of ``kind``; returns (text, [(type, value, placeholder)])."""
    if kind == "EMAIL":
        v = email()
        return rng.choice(["Contact me at {} for details.", "Send the report to <{}> please.",
                           "email: {}", "CC {}; they own the dataset."]).format(v), [("EMAIL", v, False)]
    if kind == "PHONE":
        v = phone()
        return rng.choice(["Call me on {} tomorrow.", "My phone number is {}.", "Reach the office at {}",
                           "tel: {}"]).format(v), [("PHONE", v, False)]
    if kind == "CREDIT_CARD":
        v = card()
        return rng.choice(["Charge card {} for the order.", "My card number is {}", "cc={}"]).format(v), \
            [("CREDIT_CARD", v, False)]
    if kind == "US_SSN":
        v = ssn()
        return rng.choice(["SSN: {}", "Her social security number is {}.", "ssn {} on file"]).format(v), \
            [("US_SSN", v, False)]
    if kind == "IBAN":
        v = iban()
        return rng.choice(["Wire it to IBAN {}.", "Account: {}", "Pay to {} by Friday."]).format(v), \
            [("IBAN", v, False)]
    if kind == "IP_ADDRESS":
        v = ipv4() if rng.random() < .6 else ipv6()
        return rng.choice(["The server at {} is down.", "Login from {} was blocked.", "ssh admin@{}" if ":" not in v else "ping {}"]).format(v), \
            [("IP_ADDRESS", v, False)]
    if kind == "URL_CREDENTIALS":
        url, userinfo = url_with_credentials()
        password_part = userinfo.split(":", 1)[1]
        return f"Connect with {url} and run the migration.", \
            [("URL_CREDENTIALS", userinfo, False, "pii"), ("URL_CREDENTIALS", password_part, False, "secret")]
    secret_builders = {
        "AWS_ACCESS_KEY_ID": (aws_key_id, ["aws_access_key_id = {}", "Use key {} for the bucket.", "export AWS_ACCESS_KEY_ID={}"]),
        "AWS_SECRET_ACCESS_KEY": (aws_secret, ["aws_secret_access_key = {}", "AWS_SECRET_ACCESS_KEY=\"{}\""]),
        "GITHUB_TOKEN": (github_token, ["token {} was leaked", "git clone with GITHUB_TOKEN={}"]),
        "GITHUB_FINE_GRAINED_TOKEN": (github_fine, ["Use {} for the API.", "gh auth with {}"]),
        "SLACK_TOKEN": (slack_token, ["SLACK_BOT_TOKEN={}", "bot token {}"]),
        "SLACK_WEBHOOK": (slack_webhook, ["POST to {} when done.", "webhook: {}"]),
        "STRIPE_KEY": (stripe_key, ["stripe.api_key = \"{}\"", "Use {} to charge."]),
        "GOOGLE_API_KEY": (google_key, ["maps key {}", "GOOGLE_API_KEY={}"]),
        "OPENAI_API_KEY": (openai_key, ["OPENAI_API_KEY={}", "client = OpenAI(api_key=\"{}\")"]),
        "ANTHROPIC_API_KEY": (anthropic_key, ["ANTHROPIC_API_KEY={}", "x-api-key: {}"]),
        "JWT": (jwt, ["Authorization: Bearer {}", "session={}", "the token is {}"]),
        "PRIVATE_KEY": (pem, ["Here is the key:\n{}\nkeep it safe", "{}"]),
        "PASSWORD_ASSIGNMENT": (password, ["password = \"{}\"", "DB_PASSWORD={}", "\"password\": \"{}\"",
                                           "login with passwd: {}"]),
        "HIGH_ENTROPY_SECRET": (high_entropy, ["api_key = \"{}\"", "client_secret: {}", "Authorization: Bearer {}",
                                               "auth_token={}"]),
    }
    builder, templates = secret_builders[kind]
    v = builder()
    text = rng.choice(templates).format(v)
    value = v
    return text, [(kind, value, False)]


PLACEHOLDERS = [
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY",
     "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("stripe.api_key = 'sk_test_4eC39HqLyjWDarjtT1zdp7dc'  # from the Stripe docs", "STRIPE_KEY",
     "sk_test_4eC39HqLyjWDarjtT1zdp7dc"),
    (f"Decode this sample token: {JWT_IO}", "JWT", JWT_IO),
    ("GITHUB_TOKEN=ghp_" + "x" * 36, "GITHUB_TOKEN", "ghp_" + "x" * 36),
    ("SLACK_TOKEN=xoxb-not-a-real-token-this-will-not-work", "SLACK_TOKEN", "xoxb-not-a-real-token-this-will-not-work"),
    ("Webhook example: https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX", "SLACK_WEBHOOK",
     "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("password = \"changeme\"", "PASSWORD_ASSIGNMENT", "changeme"),
    ("api_key = \"YOUR_API_KEY_1234567890abcdef\"", "HIGH_ENTROPY_SECRET", "YOUR_API_KEY_1234567890abcdef"),
]


def hard_negative() -> str:
    kind = rng.randrange(22)
    prose = "The quick brown fox jumps over the lazy dog while the model trains overnight."
    return [
        lambda: f"Card ending test number {bad_card()} fails the Luhn check.",
        lambda: f"request id {uuid.UUID(int=rng.getrandbits(128))}",
        lambda: f"Fixed in commit {hashlib.sha1(rng.randbytes(8)).hexdigest()}.",
        lambda: f"Upgrade to version {rng.randint(1, 20)}.{rng.randint(0, 30)}.{rng.randint(0, 99)} or v{rng.randint(1, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}.{rng.randint(0, 9999)}",
        lambda: f"ISBN 978-{rng.randint(0, 1)}-{rng.randint(100, 999)}-{rng.randint(10000, 99999)}-{rng.randint(0, 9)}",
        lambda: f"Meeting on {rng.randint(2000, 2030)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} at {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}",
        lambda: f"Order #{rng.randint(10**9, 10**10)} shipped on {rng.randint(1, 28)}/{rng.randint(1, 12)}/{rng.randint(2000, 2030)}.",
        lambda: f"payload={base64.b64encode(prose.encode()).decode()}",
        lambda: f"MAC {':'.join(f'{rng.randint(0, 255):02X}' for _ in range(6))} and color #{rng.randint(0, 0xFFFFFF):06x}",
        lambda: "Use std::vector<int> and std::map in C++; see foo::bar::baz.",
        lambda: "Send it to user@localhost or @channel; decorators like @property are fine.",
        lambda: f"pi is about 3.14159265358979 and e is 2.718281828459; population {rng.randint(10**6, 10**9)}",
        lambda: f"Invalid SSN example {bad_ssn()} is rejected.",
        lambda: f"Bad account {iban(valid=False)} fails mod-97.",
        lambda: f"Address 999.{rng.randint(0, 255)}.{rng.randint(0, 255)}.1 is not an IP; version 1.2.3.4 is not either.",
        lambda: f"retries=3 timeout=30 max_tokens=256 token_limit=4096 seed={rng.randint(0, 99)} lr=0.001",
        lambda: "Password: required. Enter your password below; password=os.environ['DB_PASSWORD']",
        lambda: "api_key = \"${API_KEY}\" and token: {{ secrets.TOKEN }} and password=<PASSWORD>",
        lambda: "Install sk-learn (scikit-learn) and call sk_model.fit(); AKIA prefixes mark AWS keys.",
        lambda: f"Timestamp {rng.randint(1_600_000_000, 1_800_000_000)} and duration {rng.randint(100, 999)}ms",
        lambda: f"sha256:{hashlib.sha256(rng.randbytes(8)).hexdigest()}",
        lambda: f"Coordinates 48.8566, 2.3522 and temperature 21.5C; the score was {rng.randint(1000000, 9999999)} points",
    ][kind]()


PII_KINDS = ["EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL_CREDENTIALS"]
SECRET_KINDS = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "GITHUB_FINE_GRAINED_TOKEN",
                "SLACK_TOKEN", "SLACK_WEBHOOK", "STRIPE_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY",
                "ANTHROPIC_API_KEY", "JWT", "PRIVATE_KEY", "PASSWORD_ASSIGNMENT", "HIGH_ENTROPY_SECRET"]


def build() -> list[dict]:
    rows = []
    plan: list[list[str]] = []
    for kind in PII_KINDS + SECRET_KINDS:
        for _ in range(22 if kind in PII_KINDS else 14):
            plan.append([kind])
    for _ in range(40):
        plan.append(["PLACEHOLDER"])
    for _ in range(110):
        plan.append(["NEGATIVE"])
    for _ in range(30):
        plan.append(["NEGATIVE", rng.choice(PII_KINDS), rng.choice(SECRET_KINDS)])
    rng.shuffle(plan)
    for kinds in plan:
        texts: list[tuple[str, list]] = []
        for kind in kinds:
            if kind == "NEGATIVE":
                texts.append((hard_negative(), []))
            elif kind == "PLACEHOLDER":
                text, etype, value = rng.choice(PLACEHOLDERS)
                texts.append((text, [(etype, value, True)]))
            else:
                texts.append(item(kind))
        topic = rng.choice(TOPICS)
        shape = rng.choice(["alpaca", "messages", "nested"])
        labels = []
        if shape == "alpaca":
            record = {"instruction": f"Explain {topic}.", "input": "", "output": f"Here is how {topic} works."}
            fields = ["instruction", "input", "output"]
            for text, found in texts:
                f = rng.choice(fields)
                record[f] = (record[f] + " " + text).strip()
                labels += [(f, *x) for x in found]
        elif shape == "messages":
            record = {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                                   {"role": "user", "content": f"Tell me about {topic}."},
                                   {"role": "assistant", "content": f"Sure, {topic} is a fine subject."}]}
            for text, found in texts:
                i = rng.randrange(3)
                record["messages"][i]["content"] += " " + text
                labels += [(f"messages[{i}].content", *x) for x in found]
        else:
            record = {"prompt": f"Summarise {topic}.", "meta": {"source": "forum", "tags": ["qa", topic],
                                                                  "contacts": []}, "response": "Done."}
            for j, (text, found) in enumerate(texts):
                record["meta"]["contacts"].append(text)
                labels += [(f"meta.contacts[{j}]", *x) for x in found]
        rows.append({"record": record, "labels": [
            {"field": f, "type": t, "value": v, "placeholder": p,
             "kind": rest[0] if rest else ("pii" if t in PII_KINDS else "secret")}
            for f, t, v, p, *rest in labels]})
    return rows


if __name__ == "__main__":
    rows = build()
    with open(HERE / "corpus.jsonl", "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"{len(rows)} records, {sum(len(r['labels']) for r in rows)} labels")
