"""The detection engine shared by PII and secret scanning: one linear-time pass per batch.

How it stays fast (see STACK-NOTES "Fast scanning in Python"):

* every string leaf of every record in a batch (values and string dict keys, see
  :mod:`provenir.governance._records`) is joined with ``\\x00``, one UTF-8 chunk per record, into one
  buffer, and one RE2 alternation of named groups (linear time, no backtracking) runs over it;
  clean text costs one native scan and no Python per leaf (where each leaf starts is worked out
  only for records with a candidate match), so keys, which repeat in every record, cost a few
  bytes of that native scan and need no memo or pre-filter;
* each alternative is a cheap *candidate* pattern; the precise checks (Luhn, mod-97, IIN ranges,
  ``phonenumbers``, ``ipaddress``, SSN areas, JWT structure, entropy, placeholder tests) run in
  Python only on candidates;
* RE2 has no look-arounds, so boundaries are checked in Python on the bytes around a candidate.

Alternatives are tried leftmost-first, so their order decides overlaps: a URL's credentials before
the e-mail address inside it, vendor tokens before generic ``key=value`` assignments, IP addresses
before digit runs. The value of a ``password=…``/``token=…`` assignment is rescanned, so a vendor
token or an address inside it is still typed precisely.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import functools
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import add as _add
from typing import Any

from provenir.governance import _validators as v
from provenir.governance._records import leaf_paths, leaves

PII_TYPES = ("EMAIL", "PHONE", "CREDIT_CARD", "US_SSN", "IBAN", "IP_ADDRESS", "URL_CREDENTIALS")
NER_TYPES = ("PERSON", "LOCATION")
SECRET_TYPES = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "GOOGLE_API_KEY",
    "AZURE_STORAGE_KEY", "AZURE_CONNECTION_STRING", "AZURE_SAS_TOKEN", "AZURE_CLIENT_SECRET",
    "GITHUB_TOKEN", "GITHUB_FINE_GRAINED_TOKEN", "GITLAB_TOKEN", "BITBUCKET_TOKEN",
    "SLACK_TOKEN", "SLACK_WEBHOOK", "DISCORD_TOKEN", "DISCORD_WEBHOOK", "TELEGRAM_BOT_TOKEN",
    "STRIPE_KEY", "SQUARE_TOKEN", "BRAINTREE_TOKEN", "SHOPIFY_TOKEN", "TWILIO_TOKEN",
    "SENDGRID_API_KEY", "MAILGUN_API_KEY", "MAILCHIMP_API_KEY", "NPM_TOKEN", "PYPI_TOKEN",
    "RUBYGEMS_API_KEY", "DOCKER_HUB_TOKEN", "HUGGINGFACE_TOKEN", "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY", "COHERE_API_KEY", "GROQ_API_KEY", "REPLICATE_API_TOKEN",
    "DATABRICKS_TOKEN", "DATADOG_KEY", "NEW_RELIC_KEY", "SENTRY_TOKEN", "OKTA_TOKEN",
    "ATLASSIAN_API_TOKEN", "LINEAR_API_KEY", "NOTION_TOKEN", "HEROKU_API_KEY",
    "DIGITALOCEAN_TOKEN", "CLOUDFLARE_API_TOKEN", "VAULT_TOKEN", "DOPPLER_TOKEN",
    "JWT", "PRIVATE_KEY", "URL_CREDENTIALS", "KUBERNETES_SECRET", "PASSWORD_ASSIGNMENT",
    "HIGH_ENTROPY_SECRET",
)
PII, SECRET = "pii", "secret"

_ASSIGN = r"[\"']?\]?[ \t]*(?::=|=>|==|[:=])[ \t]*"  # os.environ["KEY"] = … too
_VALUE = r"\"[^\"\n\x00]+\"|'[^'\n\x00]+'|[^\s\"'`,;\x00]+"
_TOK = r"[A-Za-z0-9_\-]+"
# names whose value is a password / a secret: as an assignment's key (pw, kv) or as a JSON key
_PW_KEY = r"(?i:[A-Za-z0-9_.\-]*(?:password|passwd|passphrase|pwd))"
_KV_KEY = (r"(?i:[A-Za-z0-9_.\-]*(?:secret|token|api[_.\-]?key|apikey|app[_.\-]?key|application[_.\-]?key|"
           r"access[_.\-]?key|(?:storage|account|secret)[_.\-]?key|"
           r"private[_.\-]?key|signing[_.\-]?key|encryption[_.\-]?key|master[_.\-]?key|"
           r"credentials?|auth))")
# a key leaf ending in one of the words those names end in (found with one RE2 pass; checked in Python)
_KEY_LEAF_END = r"(?i:password|passwd|passphrase|pwd|secret|token|key|auth|credentials?)\x00"
_KEY_NAME = re.compile(f"{_PW_KEY}|{_KV_KEY}")
_NAMED = ("pw", "kv", "xmlkv", "prose_set")  # groups whose key names the secret: any secret type may come out
# names whose value is a US SSN (a column, a JSON key)
_SSN_KEY = re.compile(r"(?i)[A-Za-z0-9_\-]*(?:ssn|social[_\- ]?security(?:[_\- ]?(?:number|no|num))?)")
_SSN_KEY_LEAF_END = r"(?i:ssn|security|security_number|securitynumber)\x00"
# a header cell of a table (CSV, Markdown, an SQL column list) naming a secret or an SSN
_TABLE_HEADER = (r"(?i:password|passwd|pwd|secret|token|key|auth|credentials?|ssn|security number)"
                 r"[ \t]*(?:,|\||\)|\r?\n)")
_SQL_INSERT = re.compile(r"(?is)INSERT\s+INTO\s+[\w.\"`\[\]]+\s*\(([^)]*)\)\s*VALUES\s*")
_SQL_VALUE = re.compile(r"\s*(?:'((?:[^']|'')*)'|([^,()\s]+))\s*(,|\))")

# Vendor tokens with a fixed prefix: (group, pattern, type, (min, max) length of the whole match).
# Formats from each provider's published token documentation (see docs/governance.md, "Secret
# types"); exact shapes and checksums are checked in Python on the candidates.
_VENDOR: list[tuple[str, str, str, tuple[int, int]]] = [
    ("aws_akid", r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]+", "AWS_ACCESS_KEY_ID", (20, 20)),
    ("aws_sts", r"(?:IQoJb3JpZ2luX2|FwoGZXIvYXdzE)[A-Za-z0-9/+=]+", "AWS_SESSION_TOKEN", (100, 4096)),
    ("gh_fine", r"github_pat_[A-Za-z0-9_]+", "GITHUB_FINE_GRAINED_TOKEN", (93, 93)),
    ("gh", r"gh[pousr]_[A-Za-z0-9]+", "GITHUB_TOKEN", (40, 40)),
    ("gitlab", r"(?:gl(?:pat|ptt|rt|dt|cbt|ft|imt|agent|oas|soat|ffct|ops|wt)-|GR1348941)[A-Za-z0-9_.\-]+",
     "GITLAB_TOKEN", (20, 300)),
    ("atlassian", r"AT(?:ATT3xFfGF0|CTT3xFfGN0)[A-Za-z0-9_=\-]+", "ATLASSIAN_API_TOKEN", (100, 400)),
    ("bitbucket", r"ATBB[A-Za-z0-9]+", "BITBUCKET_TOKEN", (32, 40)),
    ("slack", r"(?:xox[abposrce]|xapp)-[A-Za-z0-9\-]+|xoxe\.xox[bp]-[A-Za-z0-9\-]+", "SLACK_TOKEN", (15, 300)),
    ("stripe", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]+|whsec_[A-Za-z0-9]+", "STRIPE_KEY", (24, 255)),
    ("square", r"EAAA[A-Za-z0-9_\-]+|sq0(?:atp|csp)-[A-Za-z0-9_\-]+", "SQUARE_TOKEN", (29, 64)),
    ("braintree", r"access_token\$(?:production|sandbox)\$[0-9a-z]+\$[0-9a-f]+", "BRAINTREE_TOKEN", (60, 80)),
    ("shopify", r"shp(?:at|ca|pa|ss)_[0-9a-fA-F]+", "SHOPIFY_TOKEN", (38, 38)),
    ("twilio", r"SK[0-9a-fA-F]+", "TWILIO_TOKEN", (34, 34)),
    ("sendgrid", r"SG\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+", "SENDGRID_API_KEY", (69, 69)),
    ("mailgun", r"key-[0-9a-f]+", "MAILGUN_API_KEY", (36, 36)),
    ("mailchimp", r"[0-9a-f]+-us[0-9]+", "MAILCHIMP_API_KEY", (36, 37)),
    ("npm", r"npm_[A-Za-z0-9]+", "NPM_TOKEN", (40, 40)),
    ("pypi", r"pypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_\-]+", "PYPI_TOKEN", (60, 400)),
    ("rubygems", r"rubygems_[0-9a-f]+", "RUBYGEMS_API_KEY", (57, 57)),
    ("docker", r"dckr_(?:pat|oat)_[A-Za-z0-9_\-]+", "DOCKER_HUB_TOKEN", (30, 80)),
    ("hf", r"(?:hf|api_org)_[A-Za-z]+", "HUGGINGFACE_TOKEN", (37, 42)),
    ("groq", r"gsk_[A-Za-z0-9]+", "GROQ_API_KEY", (56, 56)),
    ("replicate", r"r8_[A-Za-z0-9]+", "REPLICATE_API_TOKEN", (40, 40)),
    ("databricks", r"dapi[0-9a-f]+(?:-[0-9]+)?", "DATABRICKS_TOKEN", (36, 40)),
    ("newrelic", r"NR(?:AK|II|JS|AA|RA|SP|AZ)-[A-Za-z0-9\-]+", "NEW_RELIC_KEY", (24, 50)),
    ("sentry", r"sntry[su]_[A-Za-z0-9_=+/\-]+", "SENTRY_TOKEN", (60, 400)),
    ("linear", r"lin_(?:api|oauth)_[A-Za-z0-9]+", "LINEAR_API_KEY", (48, 80)),
    ("notion", r"secret_[A-Za-z0-9]+|ntn_[A-Za-z0-9]+", "NOTION_TOKEN", (50, 50)),
    ("heroku", r"HRKU-[A-Za-z0-9_\-]+", "HEROKU_API_KEY", (30, 80)),
    ("digitalocean", r"do[por]_v1_[0-9a-f]+", "DIGITALOCEAN_TOKEN", (71, 71)),
    ("cf_origin", r"v1\.0-[0-9a-f]+-[0-9a-f]+", "CLOUDFLARE_API_TOKEN", (150, 200)),
    ("vault", r"hv[sbr]\.[A-Za-z0-9_\-]+", "VAULT_TOKEN", (28, 400)),
    ("doppler", r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9_.\-]+", "DOPPLER_TOKEN", (46, 120)),
    ("google", r"AIza[0-9A-Za-z_\-]+", "GOOGLE_API_KEY", (39, 39)),
    ("anthropic", r"sk-ant-(?:api|admin|sid)[0-9][0-9]-[A-Za-z0-9_\-]+", "ANTHROPIC_API_KEY", (50, 300)),
]

# (group name, pattern). Order = priority at the same start position. Counted repetitions are kept
# out on purpose (they multiply RE2's program and DFA size, and dense text then falls off the DFA);
# lengths and exact shapes are checked in Python on the candidates. Assignments (``pw``, ``kv``)
# come before the vendor tokens: a key such as ``secret_token=`` must not be taken for a token.
_ALTERNATIVES: list[tuple[str, str]] = [
    ("pem", r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"),
    ("k8s", r"(?:\"kind\"|kind)[ \t]*:[ \t]*[\"']?Secret[\"']?"),
    ("url_cred", r"[A-Za-z][A-Za-z0-9+.\-]*://(?P<url_user>[^\s/?#@:\"'`<>\x00]*):"
                 r"(?P<url_pass>[^\s/?#@\"'`<>\x00]+)@[A-Za-z0-9.\-\[\]]+"),
    ("slack_hook", r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]+"),
    ("discord_hook", r"https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/[0-9]+/[A-Za-z0-9_\-]+"),
    ("aws_secret", r"(?i:aws)[A-Za-z0-9_.\-]*(?i:secret)[A-Za-z0-9_.\-]*" + _ASSIGN
                   + r"[\"']?(?P<aws_secret_val>[A-Za-z0-9/+]+)"),
    ("az_key", r"(?:AccountKey|SharedAccessKey)=(?P<az_key_val>[A-Za-z0-9+/]+=*)"),
    ("az_sig", r"[?&;]sig=(?P<az_sig_val>[A-Za-z0-9%+/=]+)"),
    ("netrc", r"(?:machine[ \t]+[^\s\x00]+|default)(?:[ \t\r\n]+(?:login|account)[ \t]+[^\s\x00]+)?"
              r"[ \t\r\n]+password[ \t]+(?P<netrc_val>[^\s\x00]+)"),
    ("ssws", r"SSWS[ \t]+(?P<ssws_val>" + _TOK + ")"),
    ("bearer", r"(?i:bearer)[ \t]+(?P<bearer_val>[A-Za-z0-9._~+/\-]+=*)"),
    ("pw", _PW_KEY + _ASSIGN + r"(?P<pw_val>" + _VALUE + ")"),
    ("kv", _KV_KEY + _ASSIGN + r"(?P<kv_val>" + _VALUE + ")"),
    *[(name, pattern) for name, pattern, _, _ in _VENDOR],
    ("openai", r"sk-[A-Za-z0-9_\-]+"),
    ("jwt", r"eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
    ("email", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]+"),
    ("telegram", r"[0-9]+:A[A-Za-z0-9_\-]+"),
    ("discord", r"[MNO][A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+"),
    ("az_client", r"[A-Za-z0-9_~.\-]+Q~[A-Za-z0-9_~.\-]+"),
    ("ipv6", r"\[?[0-9A-Fa-f]*:[0-9A-Fa-f]*(?::[0-9A-Fa-f]*)*:"
             r"(?:[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+|[0-9A-Fa-f]*)(?:%[A-Za-z0-9_.\-]+)?\]?"),
    ("ipv4", r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"),
    ("iban", r"[A-Z][A-Z][0-9][0-9](?: ?[A-Z0-9])+"),
    # phone/card/SSN candidates: 7+ digits after "+", else 9+ digits, at most 2 separators apart
    ("num", r"\+[0-9](?:[ ().\-]{0,2}[0-9]){6,}|\(?[0-9](?:[ ().\-]{0,2}[0-9]){8,}"),
    ("vanity", r"(?:\+?1[ .\-]?)?\(?[2-9][0-9][0-9]\)?[ .\-]?[0-9A-Z]" + r"[ .\-]?[0-9A-Z]" * 6 + r"[A-Z]*"),
    # named values in other shapes; last, so a token starting at the same place wins
    ("xmlkv", r"(?:key|name)=[\"'](?P<xml_key>[A-Za-z0-9_.:\-]+)[\"'][ \t]+value=[\"'](?P<xml_val>[^\"'\n\x00<>]+)[\"']"),
    # "I set AWS_SECRET_ACCESS_KEY to …", "j'ai mis X à …", "X auf … gesetzt": an env-style name
    ("prose_set", r"(?P<ps_key>[A-Za-z0-9]+_[A-Za-z0-9_]+)[ \t]+(?:to|à|auf|a|en|sur|como|zu)[ \t]+"
                  r"(?P<ps_val>[^\s\"'`,;\x00]+)"),
]

_VENDOR_TYPES = {name: etype for name, _, etype, _ in _VENDOR}
_VENDOR_LEN = {name: lengths for name, _, _, lengths in _VENDOR}
_SPECIFIC_SECRET_GROUPS = frozenset(_VENDOR_TYPES) | {
    "openai", "jwt", "pem", "aws_secret", "url_cred", "slack_hook", "discord_hook", "az_key", "az_sig",
    "telegram", "discord", "az_client", "k8s",
}
_GROUP_TYPES: dict[str, tuple[str, ...]] = {
    **{g: (t,) for g, t in _VENDOR_TYPES.items()},
    "pem": ("PRIVATE_KEY",), "url_cred": ("URL_CREDENTIALS",), "aws_secret": ("AWS_SECRET_ACCESS_KEY",),
    "slack_hook": ("SLACK_WEBHOOK",), "discord_hook": ("DISCORD_WEBHOOK",),
    "az_key": ("AZURE_STORAGE_KEY", "AZURE_CONNECTION_STRING"), "az_sig": ("AZURE_SAS_TOKEN",),
    "az_client": ("AZURE_CLIENT_SECRET",), "telegram": ("TELEGRAM_BOT_TOKEN",), "discord": ("DISCORD_TOKEN",),
    "k8s": ("KUBERNETES_SECRET",), "netrc": ("PASSWORD_ASSIGNMENT",), "ssws": ("OKTA_TOKEN",),
    "xmlkv": ("HIGH_ENTROPY_SECRET",), "prose_set": ("HIGH_ENTROPY_SECRET",),
    "openai": ("OPENAI_API_KEY",), "jwt": ("JWT",), "bearer": ("HIGH_ENTROPY_SECRET", "JWT"),
    "pw": ("PASSWORD_ASSIGNMENT",), "kv": ("HIGH_ENTROPY_SECRET",), "email": ("EMAIL",),
    "ipv6": ("IP_ADDRESS",), "ipv4": ("IP_ADDRESS",), "iban": ("IBAN",), "vanity": ("PHONE",),
    "num": ("CREDIT_CARD", "US_SSN", "PHONE"),
}

# Secrets that only their context names (no prefix of their own): the assignment's key decides the
# type. (words all of which the lower-cased key must contain, type). First match wins.
_CONTEXT_TYPES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("aws", "session"), "AWS_SESSION_TOKEN"), (("amz", "security"), "AWS_SESSION_TOKEN"),
    (("aws", "security"), "AWS_SESSION_TOKEN"),
    (("secretaccesskey",), "AWS_SECRET_ACCESS_KEY"), (("secret_access_key",), "AWS_SECRET_ACCESS_KEY"),
    (("azure", "storage"), "AZURE_STORAGE_KEY"), (("storage", "account", "key"), "AZURE_STORAGE_KEY"),
    (("accountkey",), "AZURE_STORAGE_KEY"),
    (("azure", "secret"), "AZURE_CLIENT_SECRET"), (("arm_client_secret",), "AZURE_CLIENT_SECRET"),
    (("cohere",), "COHERE_API_KEY"), (("coapikey",), "COHERE_API_KEY"),
    (("datadog",), "DATADOG_KEY"), (("ddapikey",), "DATADOG_KEY"), (("ddappkey",), "DATADOG_KEY"),
    (("ddapplicationkey",), "DATADOG_KEY"),
    (("okta",), "OKTA_TOKEN"), (("cloudflare",), "CLOUDFLARE_API_TOKEN"), (("cfapi",), "CLOUDFLARE_API_TOKEN"),
    (("heroku",), "HEROKU_API_KEY"), (("twilio",), "TWILIO_TOKEN"), (("vault",), "VAULT_TOKEN"),
    (("mailgun",), "MAILGUN_API_KEY"), (("_authtoken",), "NPM_TOKEN"), (("npm_token",), "NPM_TOKEN"),
)
_PASSWORD_KEYS = frozenset({"_auth", "_password"})


_BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
_VENDOR_CHECKS: dict[str, Callable[[str], bool]] = {
    "aws_akid": lambda t: set(t[4:]) <= _BASE32,  # key ids are base32 after the 4-character prefix
    "gh": v.base62_crc32_ok,
    "npm": v.base62_crc32_ok,
    "gh_fine": lambda t: [len(x) for x in t[11:].split("_")] == [22, 59],
    "hf": lambda t: t.split("_")[-1].isalpha() and len(t.split("_")[-1]) == 34,
    "sendgrid": lambda t: [len(x) for x in t.split(".")] == [2, 22, 43],
    "mailchimp": lambda t: len(t.split("-")[0]) == 32,
    "shopify": lambda t: len(t) == 38,
    "twilio": lambda t: len(t) == 34,
    "databricks": lambda t: len(t.split("-")[0]) == 36,
    "digitalocean": lambda t: len(t) == 71,
    "cf_origin": lambda t: [len(x) for x in t[5:].split("-")] == [24, 146],
    "notion": lambda t: len(t) == 50,
    "doppler": lambda t: 40 <= len(t.rsplit(".", 1)[-1]) <= 44,
    "braintree": lambda t: [len(x) for x in t.split("$")[2:]] == [16, 32],
}

_K8S_KIND = re.compile(r"""(?:"kind"|\bkind)\s*:\s*["']?Secret\b""")
_K8S_DATA = re.compile(r"""(?m)(?:^([ \t]*)data:[ \t]*$|"data"\s*:\s*\{)""")
_K8S_VALUE = re.compile(r"""(?m)^[ \t]+[A-Za-z0-9_.\-]+:[ \t]*["']?([A-Za-z0-9+/]{4,}={0,2})["']?[ \t]*$"""
                        r"""|"[A-Za-z0-9_.\-]+"\s*:\s*"([A-Za-z0-9+/]{4,}={0,2})\"""")


def _k8s_data_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the base64 values in the ``data:`` mapping of a Secret manifest (YAML or JSON)."""
    found = _K8S_DATA.search(text)
    if not found:
        return []
    start = found.end()
    if found.group(0).rstrip().endswith("{"):
        close = text.find("}", start)
        end = close if close >= 0 else len(text)
    else:  # a YAML block: the lines indented deeper than "data:"
        indent = len(found.group(1) or "")
        end = pos = start + 1
        while pos < len(text):
            nl = text.find("\n", pos)
            line = text[pos:nl if nl >= 0 else len(text)]
            if line.strip() and len(line) - len(line.lstrip(" \t")) <= indent:
                break
            end = pos = (nl + 1) if nl >= 0 else len(text)
    out = []
    for m in _K8S_VALUE.finditer(text, start, end):
        g = m.lastindex or 1
        a, b = m.start(g), m.end(g)
        if _is_base64(text[a:b]):
            out.append((a, b))
    return out


def _is_base64(value: str) -> bool:
    if len(value) % 4 or not value:
        return False
    try:
        base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        return False
    return True


def _context_type(key: bytes) -> str | None:
    """The provider an assignment's key names (``DD_API_KEY`` → ``DATADOG_KEY``), else ``None``.

    Words are looked for in the lower-cased key and in the key without ``_``/``-`` (``cfApiToken``,
    ``DD-API-KEY``), so a word written without separators matches every spelling.
    """
    text = key.decode("ascii", "replace")
    compact = text.replace("_", "").replace("-", "").replace(".", "")
    for words, etype in _CONTEXT_TYPES:
        if all(w in text or w in compact for w in words):
            return etype
    return None


# API hosts that say whose credential a bearer token or a .netrc password is
_HOST_TYPES: tuple[tuple[bytes, str], ...] = (
    (b"heroku.com", "HEROKU_API_KEY"), (b"api.cloudflare.com", "CLOUDFLARE_API_TOKEN"),
    (b"datadoghq.", "DATADOG_KEY"), (b".okta.com", "OKTA_TOKEN"), (b".oktapreview.com", "OKTA_TOKEN"),
    (b"api.cohere.", "COHERE_API_KEY"), (b"api.digitalocean.com", "DIGITALOCEAN_TOKEN"),
)


def _host_type(buf: bytes, ls: int, le: int) -> str | None:
    line = buf[ls:le].lower()
    for host, etype in _HOST_TYPES:
        if host in line:
            return etype
    return None

_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_B64 = _ALNUM | frozenset(b"+/=_-")
_PHONE_WORDS = (b"phone", b"tel", b"call", b"mobile", b"cell", b"fax", b"whatsapp", b"sms",
                b"text me", b"contact", b"dial", b"reach me", b"number")
_PHONE_CONTEXT = re.compile(
    b"(?i)" + b"|".join(re.escape(w) for w in _PHONE_WORDS))
_SSN_WORDS = (b"ssn", b"social security", b"social-security", b"ss#", b"ss #", b"soc sec",
              b"social sec")
_CARD_WORDS = (b"card", b"visa", b"mastercard", b"amex", b"discover", b"jcb", b"diners", b"unionpay",
               b"union pay", b"maestro", b"rupay", b"mir ", b"dankort", b"uatp", b"pan", b"cc", b"credit",
               b"debit", b"payment", b"pay with", b"charged")
_EXTENSION = re.compile(rb"[ \t]*(?:,[ \t]*)?(?:ext\.?|extension|x|#)[ \t]*[0-9]{1,6}(?![0-9A-Za-z])", re.I)
_TOLL_FREE = frozenset({"800", "833", "844", "855", "866", "877", "888"})
_VERSION_WORDS = (b"v", b"version", b"ver", b"ver.", b"release", b"build", b"python", b"node")
# the other fields of an Azure connection string: an AccountKey among them is the connection string's
_AZ_CONNECTION_FIELDS = (b"AccountName=", b"DefaultEndpointsProtocol=", b"EndpointSuffix=", b"BlobEndpoint=",
                         b"Endpoint=")


def _ends_with_word(context: bytes, words: tuple[bytes, ...]) -> bool:
    """``context`` ends with one of ``words``: a short one as a whole word (``ver``, not "server"), a
    long one also as a suffix (``AssemblyVersion``)."""
    for word in words:
        if context.endswith(word) and (len(word) >= 5 or len(context) == len(word)
                                       or context[-len(word) - 1] not in _WORD):
            return True
    return False


_UNANCHORED = None


@dataclass(slots=True)
class Hit:
    """One detection inside a batch: which leaf, what, where (characters), and the raw value.

    The raw value never leaves the process in a report (see :mod:`provenir.governance._report`).
    """

    record: int
    leaf: int
    entity_type: str
    kind: str
    start: int
    end: int
    value: str
    placeholder: bool = False


@dataclass(slots=True)
class RecordScan:
    record: Any
    values: list[str]
    problem: str | None
    hits: list[Hit] = field(default_factory=list)
    _paths: list[str] | None = None
    _paths_hits: int = -1

    @property
    def paths(self) -> list[str]:
        """Field path of each leaf (built on first use: only records with findings need them).

        A key that holds a finding (of this scan, or of any type Provenir detects by pattern) is
        never spelled out: paths through it say ``<entry N>``; key leaves are ``<key N>``.
        """
        if self._paths is None or self._paths_hits != len(self.hits):
            hit_leaves = {hit.leaf for hit in self.hits}
            self._paths = leaf_paths(self.record, lambda leaf, key: leaf in hit_leaves or key_is_sensitive(key))
            self._paths_hits = len(self.hits)
        return self._paths


_KEY_MEMO: dict[str, bool] = {}
_KEY_MEMO_SIZE = 8192
_full_engine: Engine | None = None


def key_is_sensitive(key: str) -> bool:
    """Whether a dict key holds anything the pattern engine finds, of *any* PII or secret type.

    Used for report paths only (records with findings), so a PII-only scan does not print a key that
    is a token, nor a secrets-only scan a key that is an e-mail address. Memoised per process
    (bounded): a leaf's findings depend on its own text only (see :meth:`Engine.scan`).
    """
    known = _KEY_MEMO.get(key)
    if known is not None:
        return known
    global _full_engine
    if _full_engine is None:
        _full_engine = Engine(PII_TYPES, SECRET_TYPES)
    found = bool(_full_engine.scan([key])[0].hits)
    if len(_KEY_MEMO) >= _KEY_MEMO_SIZE:
        _KEY_MEMO.clear()
    _KEY_MEMO[key] = found
    return found


def _layout(values: list[str], start: int, size: int) -> tuple[list[int], list[int]]:
    """Where each leaf of one record's chunk starts in the batch buffer, and its length (bytes).

    Built only for records with a candidate match, so a clean record costs no Python per leaf.
    """
    lengths = list(map(len, values))
    if size != sum(lengths) + len(lengths) - 1:  # not all ASCII: characters are not bytes
        lengths = [len(text.encode("utf-8", "surrogatepass")) for text in values]
    return list(map(_add, accumulate(lengths, initial=start), range(len(lengths)))), lengths


@functools.lru_cache(maxsize=8)
def _compiled(groups: tuple[str, ...]) -> tuple[Any, Any, list[tuple[int, str]], dict[str, int]]:
    """``(locator, full program, top-level groups, group name → index)`` for these alternatives.

    RE2's binding returns every group's span on each match, and with ~70 groups that costs three
    times the search itself. So a group-free *locator* finds each candidate; only a candidate that
    is not a plain digit run (most of them are) is matched again with the full program for its
    groups (see :meth:`Engine.scan`).
    """
    from re2 import _re2  # google-re2's binding: bytes in, byte spans out, no per-call re-encoding

    global _UNANCHORED
    _UNANCHORED = _re2.RE2.Anchor.UNANCHORED
    chosen = [(name, pat) for name, pat in _ALTERNATIVES if name in groups]
    pattern = "|".join(f"(?P<{name}>{pat})" for name, pat in chosen)
    options = _re2.RE2.Options()
    options.max_mem = 256 << 20  # the default budget makes dense batches fall back to a slow path
    regex = _re2.RE2(pattern.encode(), options)
    locator = _re2.RE2(_NAMED_GROUP.sub("(?:", "|".join(f"(?:{pat})" for _, pat in chosen)).encode(), options)
    if not regex.ok() or not locator.ok():  # pragma: no cover - patterns are static
        raise RuntimeError(regex.error() or locator.error())
    named = {name: index for name, index in regex.NamedCapturingGroups()}
    named = {k.decode() if isinstance(k, bytes) else k: i for k, i in named.items()}
    # exactly one top-level alternative takes part in a match, so the lookup order is free: the
    # most frequent candidates (digit runs, addresses) are checked first
    top = [(named[name], name) for name, _ in reversed(_ALTERNATIVES) if name in groups]
    return locator, regex, top, named


_NAMED_GROUP = re.compile(r"\(\?P<[A-Za-z_0-9]+>")
_DIGIT_RUN_BYTES = b"0123456789 ().-+"
_IPV4_SHAPE = re.compile(rb"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")


class Engine:
    """Scans batches of records for the PII and secret types asked for.

    Args:
        pii_types: PII entity types to report (subset of :data:`PII_TYPES`).
        secret_types: secret types to report (subset of :data:`SECRET_TYPES`).
        phone_regions: regions for numbers written without a ``+`` country code.
    """

    def __init__(self, pii_types: Sequence[str] = PII_TYPES, secret_types: Sequence[str] = SECRET_TYPES,
                 phone_regions: Sequence[str] = ("US",)):
        self.pii_types = frozenset(pii_types)
        self.secret_types = frozenset(secret_types)
        self.phone_regions = tuple(phone_regions)
        # national formats of other plans (01 21 26 58 90, 07427 962336) need no phone word before them
        self._national_plans = any(region not in ("US", "CA") for region in self.phone_regions)
        wanted = self.pii_types | self.secret_types
        groups = tuple(name for name, _ in _ALTERNATIVES
                       if set(_GROUP_TYPES.get(name, ())) & wanted or name in _NAMED)
        if not self.secret_types:
            groups = tuple(g for g in groups if g not in _NAMED)
        self._groups = groups
        self._locator, self._regex, self._top, self._named = (
            _compiled(groups) if groups else (None, None, [], {}))
        self._ipv4 = "ipv4" in groups
        self._num = "num" if "num" in groups else "vanity"
        self._handlers: dict[str, Callable[..., Any]] = {
            name: getattr(self, f"_h_{name}", None) or functools.partial(self._vendor, name)
            for name in groups
        }
        self._k8s = "k8s" in groups
        self._key_leaves = self._tables = None
        self._ssn_by_name = "US_SSN" in self.pii_types
        if "kv" in groups or self._ssn_by_name:
            from re2 import _re2

            ends = ([_KEY_LEAF_END] if "kv" in groups else []) + ([_SSN_KEY_LEAF_END] if self._ssn_by_name else [])
            self._key_leaves = _re2.RE2("|".join(ends).encode(), _re2.RE2.Options())
            self._tables = _re2.RE2(_TABLE_HEADER.encode(), _re2.RE2.Options())

    # -- batch scanning ------------------------------------------------------------------------
    def scan(self, records: Sequence[Any]) -> list[RecordScan]:
        """Scan a batch; one :class:`RecordScan` per record, in order.

        Leaves never influence each other: no candidate pattern matches ``\\x00``, and every handler
        looks only inside its own leaf's bounds (boundaries, context words), so a leaf's findings
        depend on its own text (and the engine's options) alone.
        """
        scans: list[RecordScan] = []
        chunks: list[bytes] = []  # one per record with leaves: its leaves joined by \x00, encoded
        owners: list[int] = []  # the record of each chunk
        starts: list[int] = []  # where each chunk starts in the buffer
        pos = 0
        for ri, record in enumerate(records):
            values, problem = leaves(record)
            scans.append(RecordScan(record, values, problem))
            if values:
                data = "\x00".join(values).encode("utf-8", "surrogatepass")
                chunks.append(data)
                owners.append(ri)
                starts.append(pos)
                pos += len(data) + 1
        if not chunks or self._regex is None:
            return scans
        buf = b"\x00".join(chunks)
        match = self._regex.Match
        locate = self._locator.Match
        top = self._top
        ipv4, num = self._ipv4, self._num
        end = len(buf)
        chunk_end = -1  # the chunk of the last match: its end, first byte, record, leaf layout
        chunk_start = ri = 0
        begins: list[int] = []
        lengths: list[int] = []
        p = 0
        while p < end:
            s, e = locate(_UNANCHORED, buf, p, end)[0]
            if s < 0:
                break
            if not buf[s:e].translate(None, _DIGIT_RUN_BYTES):
                # only digits and ( ) . - + space: no alternative before ipv4 can match that, so it is
                # an IPv4 address when it has that exact shape, else a number (handlers need no groups)
                spans = None
                name = "ipv4" if ipv4 and _IPV4_SHAPE.fullmatch(buf, s, e) else num
            else:
                spans = match(_UNANCHORED, buf, s, end)
                name = next(n for gi, n in top if spans[gi][0] >= 0)
            if not chunk_start <= s < chunk_end:  # a match in another record's chunk
                ci = bisect.bisect_right(starts, s) - 1
                chunk_start = starts[ci]
                chunk_end = chunk_start + len(chunks[ci])
                ri = owners[ci]
                begins, lengths = _layout(scans[ri].values, chunk_start, len(chunks[ci]))
            leaf = bisect.bisect_right(begins, s) - 1
            ls = begins[leaf]
            le = ls + lengths[leaf]
            if e > le:  # cannot cross a leaf (classes exclude \x00); kept as a guard
                e = le
            found, resume = self._handlers[name](buf, spans, s, e, ls, le)
            if found:
                text = scans[ri].values[leaf]
                ascii_leaf = len(text) == le - ls
                for etype, kind, bs, be, placeholder in found:
                    if (kind == PII and etype not in self.pii_types) or (
                        kind == SECRET and etype not in self.secret_types
                    ):
                        continue
                    if ascii_leaf:
                        cs, ce = bs - ls, be - ls
                    else:
                        cs = len(buf[ls:bs].decode("utf-8", "surrogatepass"))
                        ce = cs + len(buf[bs:be].decode("utf-8", "surrogatepass"))
                    scans[ri].hits.append(Hit(ri, leaf, etype, kind, cs, ce, text[cs:ce], placeholder))
            p = resume if resume is not None and resume > s else max(e, s + 1)
        if self._key_leaves is not None:
            self._values_under_secret_keys(buf, chunks, owners, starts, scans)
            self._table_cells(buf, chunks, owners, starts, scans)
        if self._k8s and b"Secret" in buf:
            for ri, scan in enumerate(scans):
                if scan.values:
                    self._kubernetes_secrets(scan, ri)
        return scans

    def _values_under_secret_keys(self, buf: bytes, chunks: list[bytes], owners: list[int], starts: list[int],
                                  scans: list[RecordScan]) -> None:
        """A string value whose own key names a secret (``{"SecretAccessKey": "…"}``, ``{"password": …}``)
        is checked as that assignment would be: the key's name gives the context a leaf alone lacks.

        One RE2 pass finds key leaves ending in a secret word; only those records build their paths to
        make sure the next leaf is that key's value.
        """
        search = self._key_leaves.Match
        p, end = 0, len(buf)
        while p < end:
            s, e = search(_UNANCHORED, buf, p, end)[0]
            if s < 0:
                return
            p = e
            ks = buf.rfind(b"\x00", 0, s) + 1
            key = buf[ks:e - 1]
            name_text = key.decode("utf-8", "replace")
            if len(key) > 64 or not (_KEY_NAME.fullmatch(name_text) or _SSN_KEY.fullmatch(name_text)):
                continue
            ci = bisect.bisect_right(starts, ks) - 1
            ri = owners[ci]
            scan = scans[ri]
            begins, _ = _layout(scan.values, starts[ci], len(chunks[ci]))
            leaf = bisect.bisect_right(begins, ks) - 1
            if begins[leaf] != ks or leaf + 1 >= len(scan.values) or any(
                    h.leaf == leaf + 1 and h.kind == SECRET for h in scan.hits):
                continue
            paths = leaf_paths(scan.record)
            name = scan.values[leaf]
            head, _, last = paths[leaf].rpartition(".")
            if not last.startswith("<key ") or paths[leaf + 1] != (f"{head}.{name}" if head else name):
                continue
            value = scan.values[leaf + 1]
            for etype, kind, a, b, placeholder in self._named_value(name, value, 0):
                scan.hits.append(Hit(ri, leaf + 1, etype, kind, a, b, value[a:b], placeholder))

    def _named_value(self, name: str, value: str, at: int) -> list[tuple[str, str, int, int, bool]]:
        """What a value is, given only the name it sits under (a JSON key, a column): checked as the
        assignment ``name="value"`` would be, or as an SSN under an SSN name. Spans start at ``at``."""
        if _SSN_KEY.fullmatch(name):
            digits = value.replace("-", "").replace(" ", "")
            if self._ssn_by_name and len(digits) == 9 and digits.isdigit() and len(value) in (9, 11) and v.ssn_ok(digits):
                return [("US_SSN", PII, at, at + len(value), digits in v.SSN_EXAMPLES)]
            return []
        if not self.secret_types:
            return []
        quote = '"' if '"' not in value else "'"
        if quote in value or not value or any(ch.isspace() for ch in value) or "\x00" in value:
            return []  # a value with spaces under "password" is a description, not the password
        assignment = f"{name}={quote}{value}{quote}"
        offset = len(name) + 2
        return [(hit.entity_type, SECRET, at + hit.start - offset, at + hit.end - offset, hit.placeholder)
                for hit in self.scan([assignment])[0].hits if hit.kind == SECRET and hit.start >= offset]

    def _table_cells(self, buf: bytes, chunks: list[bytes], owners: list[int], starts: list[int],
                     scans: list[RecordScan]) -> None:
        """Cells of a column whose header names a secret or an SSN: CSV and Markdown tables whose
        header is a line of the text, and SQL ``INSERT INTO t (cols) VALUES (…)`` statements."""
        search = self._tables.Match
        p, end, seen = 0, len(buf), set()
        while p < end:
            s, e = search(_UNANCHORED, buf, p, end)[0]
            if s < 0:
                return
            p = e
            ci = bisect.bisect_right(starts, s) - 1
            ri = owners[ci]
            scan = scans[ri]
            begins, _ = _layout(scan.values, starts[ci], len(chunks[ci]))
            leaf = bisect.bisect_right(begins, s) - 1
            if (ri, leaf) in seen:
                continue
            seen.add((ri, leaf))
            text = scan.values[leaf]
            cells = [(name, a, b) for name, a, b in _sql_cells(text) + _grid_cells(text)
                     if a < b and (_KEY_NAME.fullmatch(name) or _SSN_KEY.fullmatch(name))]
            taken = [(h.start, h.end) for h in scan.hits if h.leaf == leaf]
            for name, a, b in cells:
                if any(x < b and a < y for x, y in taken):
                    continue  # already found in the text itself
                for etype, kind, x, y, placeholder in self._named_value(name, text[a:b], a):
                    scan.hits.append(Hit(ri, leaf, etype, kind, x, y, text[x:y], placeholder))
                    taken.append((x, y))

    # -- helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _before(buf: bytes, s: int, ls: int) -> int:
        return buf[s - 1] if s > ls else 0

    @staticmethod
    def _after(buf: bytes, e: int, le: int) -> int:
        return buf[e] if e < le else 0

    def _group(self, spans: Any, name: str) -> tuple[int, int]:
        return spans[self._named[name]]

    def _specific_secret_inside(self, buf: bytes, vs: int, ve: int, ls: int, le: int) -> bool:
        """Whether the value ``buf[vs:ve]`` holds a token of a specific type (which then wins over
        the generic assignment): a candidate of such a group that its own checks accept — not a
        shape that merely starts like one (``…SKF…`` inside a random value is no Twilio key)."""
        from re2 import _re2

        p = vs
        for _ in range(8):
            s = self._regex.Match(_UNANCHORED, buf, p, ve)[0][0]
            if s < 0:
                return False
            spans = self._regex.Match(_re2.RE2.Anchor.ANCHOR_START, buf, s, le)  # the whole candidate
            e = spans[0][1]
            name = next(n for gi, n in self._top if spans[gi][0] >= 0)
            if name == "bearer":
                return True
            if name in _SPECIFIC_SECRET_GROUPS:
                if s == vs and e >= ve:
                    return True  # the whole value has that format (a ghp_… with a bad checksum is no secret)
                found, _ = self._handlers[name](buf, spans, s, e, ls, le)
                if found:
                    return True
            p = max(e, s + 1)
        return False

    @staticmethod
    def _text(buf: bytes, s: int, e: int) -> str:
        return buf[s:e].decode("utf-8", "surrogatepass")

    # -- secrets -------------------------------------------------------------------------------
    def _bounded(self, buf: bytes, s: int, e: int, ls: int, le: int) -> bool:
        return self._before(buf, s, ls) not in _ALNUM and self._after(buf, e, le) not in _WORD

    def _vendor(self, name: str, buf, spans, s, e, ls, le):
        """A prefixed vendor token: word boundaries, the documented length, and its checksum."""
        if not self._bounded(buf, s, e, ls, le):
            return [], None
        low, high = _VENDOR_LEN[name]
        check = _VENDOR_CHECKS.get(name)
        whole = self._text(buf, s, e)
        if not (low <= e - s <= high and (check is None or check(whole))):
            # sentence punctuation after the token; a token may itself end in "-" or "_"
            while e > s and buf[e - 1] in b".-_":
                e -= 1
        if not low <= e - s <= high:
            return [], None
        value = self._text(buf, s, e)
        placeholder = v.is_placeholder(value)
        if check is not None and not check(value):
            if not placeholder:
                return [], None
        return [(_VENDOR_TYPES[name], SECRET, s, e, placeholder)], None

    def _h_slack_hook(self, buf, spans, s, e, ls, le):
        if e - s < 60:
            return [], None
        value = self._text(buf, s, e)
        return [("SLACK_WEBHOOK", SECRET, s, e, v.is_placeholder(value))], None

    def _h_discord_hook(self, buf, spans, s, e, ls, le):
        token = buf[s:e].rsplit(b"/", 1)[-1]
        if len(token) < 60:
            return [], None
        value = self._text(buf, s, e)
        return [("DISCORD_WEBHOOK", SECRET, s, e, v.is_placeholder(value))], None

    def _h_openai(self, buf, spans, s, e, ls, le):
        if self._before(buf, s, ls) in _ALNUM or self._after(buf, e, le) in _WORD:
            return [], None
        value = self._text(buf, s, e)
        body = value[3:]
        if len(body) < 20:
            return [], None
        for prefix in ("proj-", "svcacct-", "admin-", "None-"):
            if body.startswith(prefix):
                body = body[len(prefix):]
                break
        mixed = any(c.isdigit() for c in body) and any(c.isupper() for c in body) and any(
            c.islower() for c in body)
        if not ("T3BlbkFJ" in value or (len(body) >= 32 and mixed)):
            return [], None
        return [("OPENAI_API_KEY", SECRET, s, e, v.is_placeholder(value))], None

    def _h_jwt(self, buf, spans, s, e, ls, le):
        if self._before(buf, s, ls) in _ALNUM:
            return [], None
        value = self._text(buf, s, e)
        if not v.jwt_ok(value):
            return [], None
        return [("JWT", SECRET, s, e, v.is_placeholder(value))], None

    def _h_telegram(self, buf, spans, s, e, ls, le):
        before = self._before(buf, s, ls)
        if (before in _ALNUM and buf[max(ls, s - 3):s] != b"bot") or self._after(buf, e, le) in _WORD:
            return [], None
        colon = buf.index(b":", s, e)
        if not 5 <= colon - s <= 16 or e - colon - 1 != 35:
            return [], None
        value = self._text(buf, s, e)
        return [("TELEGRAM_BOT_TOKEN", SECRET, s, e, v.is_placeholder(value))], None

    def _h_discord(self, buf, spans, s, e, ls, le):
        if not self._bounded(buf, s, e, ls, le):
            return [], None
        parts = buf[s:e].split(b".")
        if len(parts) != 3 or not 23 <= len(parts[0]) <= 28 or len(parts[1]) != 6 \
                or not 27 <= len(parts[2]) <= 38:
            return [], None
        try:  # the first part is the bot's user id (a snowflake), base64-encoded
            decoded = base64.b64decode(parts[0] + b"=" * (-len(parts[0]) % 4), altchars=b"-_", validate=True)
        except ValueError:
            return [], None
        if not decoded.isdigit():
            return [], None
        value = self._text(buf, s, e)
        return [("DISCORD_TOKEN", SECRET, s, e, v.is_placeholder(value))], None

    def _h_az_client(self, buf, spans, s, e, ls, le):
        q = buf.find(b"Q~", s, e)
        start = q - 4
        if start < s or not 48 <= buf[q - 1] <= 57:
            return [], None
        if start > ls and buf[start - 1] in _ALNUM:
            return [], None
        while e > q and buf[e - 1] in b".":
            e -= 1
        if not 37 <= e - start <= 40 or self._after(buf, e, le) in _WORD:
            return [], None
        value = self._text(buf, start, e)
        return [("AZURE_CLIENT_SECRET", SECRET, start, e, v.is_placeholder(value))], None

    def _h_az_key(self, buf, spans, s, e, ls, le):
        vs, ve = self._group(spans, "az_key_val")
        if ve - vs < 40:
            return [], vs
        etype = "AZURE_CONNECTION_STRING" if (buf[s:s + 10] != b"AccountKey" or any(
            buf.find(field, ls, le) >= 0 for field in _AZ_CONNECTION_FIELDS)) else "AZURE_STORAGE_KEY"
        value = self._text(buf, vs, ve)
        return [(etype, SECRET, vs, ve, v.is_placeholder(value))], None

    def _h_az_sig(self, buf, spans, s, e, ls, le):
        vs, ve = self._group(spans, "az_sig_val")
        if ve - vs < 20 or buf.find(b"sv=", ls, le) < 0:
            return [], None
        value = self._text(buf, vs, ve)
        return [("AZURE_SAS_TOKEN", SECRET, vs, ve, v.is_placeholder(value))], None

    def _h_netrc(self, buf, spans, s, e, ls, le):
        if self._before(buf, s, ls) in _WORD:
            return [], None
        vs, ve = self._group(spans, "netrc_val")
        value = self._text(buf, vs, ve)
        if v.is_reference(value) or self._specific_secret_inside(buf, vs, ve, ls, le):
            return [], vs
        etype = _host_type(buf, s, vs) or "PASSWORD_ASSIGNMENT"
        return [(etype, SECRET, vs, ve, v.is_placeholder(value))], None

    def _h_ssws(self, buf, spans, s, e, ls, le):
        vs, ve = self._group(spans, "ssws_val")
        value = self._text(buf, vs, ve)
        if ve - vs < 30 or not v.looks_random(value):
            return [], vs
        return [("OKTA_TOKEN", SECRET, vs, ve, v.is_placeholder(value))], None

    def _h_k8s(self, buf, spans, s, e, ls, le):
        return [], None  # a marker only: values under data: are found by _kubernetes_secrets

    def _h_pem(self, buf, spans, s, e, ls, le):
        marker = buf.find(b"-----END", e, le)
        if marker >= 0:
            close = buf.find(b"-----", marker + 8, le)
            end = close + 5 if close >= 0 else le
        else:
            end = le
        body = self._text(buf, e, marker if marker >= 0 else end)
        compact = "".join(body.replace("\\n", "\n").split())
        placeholder = len(compact) < 64 or v.is_placeholder(compact)
        return [("PRIVATE_KEY", SECRET, s, end, placeholder)], end

    def _h_aws_secret(self, buf, spans, s, e, ls, le):
        vs, ve = self._group(spans, "aws_secret_val")
        if ve - vs != 40 or self._after(buf, ve, le) in _B64:
            return [], vs
        value = self._text(buf, vs, ve)
        return [("AWS_SECRET_ACCESS_KEY", SECRET, vs, ve, v.is_placeholder(value))], None

    def _h_url_cred(self, buf, spans, s, e, ls, le):
        us, _ = self._group(spans, "url_user")
        ps, pe = self._group(spans, "url_pass")
        password = self._text(buf, ps, pe)
        if v.is_reference(password):
            return [], None
        placeholder = v.is_placeholder(password) or password.lower() in ("password", "pass", "secret")
        return [("URL_CREDENTIALS", PII, us, pe, False),
                ("URL_CREDENTIALS", SECRET, ps, pe, placeholder)], None

    def _h_bearer(self, buf, spans, s, e, ls, le):
        vs, ve = self._group(spans, "bearer_val")
        if self._specific_secret_inside(buf, vs, ve, ls, le):
            return [], vs
        value = self._text(buf, vs, ve)
        if v.is_reference(value) or not v.looks_random(value):
            return [], vs
        etype = _host_type(buf, ls, le) or "HIGH_ENTROPY_SECRET"
        return [(etype, SECRET, vs, ve, v.is_placeholder(value))], vs

    def _assignment_value(self, buf: bytes, spans: Any, group: str) -> tuple[int, int, str, bool]:
        vs, ve = self._group(spans, group)
        quoted = buf[vs] in (0x22, 0x27) and ve - vs >= 2
        if quoted:
            vs, ve = vs + 1, ve - 1
        else:
            while ve > vs and buf[ve - 1] in b".!?)]}:":  # sentence punctuation after a bare value
                ve -= 1
        return vs, ve, self._text(buf, vs, ve), quoted

    def _h_pw(self, buf, spans, s, e, ls, le):
        if self._before(buf, s, ls) in _WORD:
            return [], None
        vs, ve, value, quoted = self._assignment_value(buf, spans, "pw_val")
        if len(value) < 4 or v.is_reference(value) or self._specific_secret_inside(buf, vs, ve, ls, le):
            return [], vs
        if not quoted and b":" in buf[s:vs] and value.isalpha() and (value.islower() or value.istitle()):
            return [], vs  # prose: "Password: required", "password: reset it"
        if value.isidentifier() and "_" in value and value.lower() == value:
            return [], vs  # a variable name: password=db_password
        return [("PASSWORD_ASSIGNMENT", SECRET, vs, ve, v.is_placeholder(value))], vs

    def _h_xmlkv(self, buf, spans, s, e, ls, le):
        ks, ke = self._group(spans, "xml_key")
        vs, ve = self._group(spans, "xml_val")
        return self._named_group(buf, ks, ke, vs, ve, ls, le)

    def _h_prose_set(self, buf, spans, s, e, ls, le):
        if self._before(buf, s, ls) in _WORD:
            return [], None
        ks, ke = self._group(spans, "ps_key")
        vs, ve = self._group(spans, "ps_val")
        while ve > vs and buf[ve - 1] in b".!?)]}:":  # sentence punctuation after the value
            ve -= 1
        return self._named_group(buf, ks, ke, vs, ve, ls, le)

    def _named_group(self, buf, ks, ke, vs, ve, ls, le):
        name = self._text(buf, ks, ke)
        if not _KEY_NAME.fullmatch(name) or ve - vs < 8:
            return [], vs  # not a secret's name: the value is searched on its own
        if self._specific_secret_inside(buf, vs, ve, ls, le):
            return [], vs
        text = self._text(buf, vs, ve)
        found = []
        for etype, kind, a, b, placeholder in self._named_value(name, text, 0):
            bs = vs + len(text[:a].encode("utf-8", "surrogatepass"))
            be = vs + len(text[:b].encode("utf-8", "surrogatepass"))
            found.append((etype, kind, bs, be, placeholder))
        return found, (None if found else vs)

    def _h_kv(self, buf, spans, s, e, ls, le):
        if self._before(buf, s, ls) in _WORD:
            return [], None
        vs, ve, value, _ = self._assignment_value(buf, spans, "kv_val")
        if v.is_reference(value) or self._specific_secret_inside(buf, vs, ve, ls, le):
            return [], vs
        key = buf[s:vs].lower().rstrip(b"\"' \t:=>").lstrip(b"/:-")
        if key.decode("ascii", "replace") in _PASSWORD_KEYS:
            if len(value) < 4:
                return [], vs
            return [("PASSWORD_ASSIGNMENT", SECRET, vs, ve, v.is_placeholder(value))], vs
        etype = _context_type(key)
        if not (v.looks_random(value, min_length=16 if etype is None else 12)
                or (etype == "HEROKU_API_KEY" and v.is_uuid(value))):  # Heroku's classic keys are UUIDs
            return [], vs
        return [(etype or "HIGH_ENTROPY_SECRET", SECRET, vs, ve, v.is_placeholder(value))], vs

    def _kubernetes_secrets(self, scan: RecordScan, ri: int) -> None:
        """Values under ``data:`` of a ``kind: Secret`` manifest: in one text leaf, or a parsed record."""
        record = scan.record
        if type(record) is dict and record.get("kind") == "Secret" and type(record.get("data")) is dict:
            data_leaves = {leaf for leaf, path in enumerate(leaf_paths(record, lambda *_: False))
                           if path.startswith("data.") and "<key" not in path}
            for leaf in sorted(data_leaves):
                text = scan.values[leaf]
                if len(text) >= 4 and _is_base64(text.strip()):
                    self._replace_hits(scan, ri, leaf, [(0, len(text))])
        for leaf, text in enumerate(scan.values):
            if "Secret" not in text or "data" not in text or not _K8S_KIND.search(text):
                continue
            spans = _k8s_data_spans(text)
            if spans:
                self._replace_hits(scan, ri, leaf, spans)

    def _replace_hits(self, scan: RecordScan, ri: int, leaf: int, spans: list[tuple[int, int]]) -> None:
        if "KUBERNETES_SECRET" not in self.secret_types:
            return
        text = scan.values[leaf]
        scan.hits[:] = [h for h in scan.hits if not (
            h.leaf == leaf and h.kind == SECRET and any(h.start < b and a < h.end for a, b in spans))]
        for a, b in spans:
            scan.hits.append(Hit(ri, leaf, "KUBERNETES_SECRET", SECRET, a, b, text[a:b],
                                 v.is_placeholder(text[a:b])))

    # -- PII -----------------------------------------------------------------------------------
    def _h_email(self, buf, spans, s, e, ls, le):
        if s - ls >= 3 and buf[s - 3:s] == b"://":
            return [], None  # https://key@host: URL userinfo (a Sentry DSN), not an address
        local_end = buf.find(b"@", s, e)
        local = buf[s:local_end]
        if local.startswith(b".") or local.endswith(b".") or b".." in local or len(local) > 64:
            return [], None
        labels = buf[local_end + 1:e].split(b".")
        if not 2 <= len(labels[-1]) <= 24 or any(not lab or lab[:1] == b"-" or lab[-1:] == b"-" or len(lab) > 63
                                                for lab in labels):
            return [], None
        if self._after(buf, e, le) in _WORD:
            return [], None
        return [("EMAIL", PII, s, e, False)], None

    def _h_ipv4(self, buf, spans, s, e, ls, le):
        before, after = self._before(buf, s, ls), self._after(buf, e, le)
        if before in _WORD or before == 0x2E or after in _WORD or (
            after == 0x2E and e + 1 < le and 48 <= buf[e + 1] <= 57
        ):
            return [], None
        context = buf[max(ls, s - 16):s].lower().rstrip(b" :=(\"'")
        if _ends_with_word(context, _VERSION_WORDS):
            return [], None
        if not v.ipv4_ok(self._text(buf, s, e)):
            return [], None
        return [("IP_ADDRESS", PII, s, e, False)], None

    def _h_ipv6(self, buf, spans, s, e, ls, le):
        if buf[s] == 0x5B:  # "[2001:db8::1]:443": the address is inside the brackets
            if s > ls and (buf[s - 1] in _WORD or buf[s - 1] in b")]"):
                return [], None  # a subscript or slice: x[::2]
            s += 1
        if buf[e - 1] == 0x5D:
            e -= 1
        before, after = self._before(buf, s, ls), self._after(buf, e, le)
        if before in _WORD or before in (0x3A, 0x2E) or after in _WORD or after == 0x3A:
            return [], None
        if after == 0x2E and e + 1 < le and 48 <= buf[e + 1] <= 57:
            return [], None  # "::ffff:1.2.3": not an embedded IPv4 address
        text = self._text(buf, s, e)
        if not (v.ipv6_ok(text) or text == "::"):
            return [], None
        return [("IP_ADDRESS", PII, s, e, False)], None

    def _h_iban(self, buf, spans, s, e, ls, le):
        if self._before(buf, s, ls) in _ALNUM:
            return [], None
        raw = self._text(buf, s, e)
        compact = raw.replace(" ", "")
        length = v.iban_valid_length(compact)
        if not length:
            return [], None
        # map the compact length back onto the (possibly spaced) text
        seen = 0
        for index, ch in enumerate(raw):
            if ch != " ":
                seen += 1
                if seen == length:
                    end = s + index + 1
                    break
        if self._after(buf, end, le) in _ALNUM:
            return [], None
        return [("IBAN", PII, s, end, False)], None

    def _h_num(self, buf, spans, s, e, ls, le):
        before = self._before(buf, s, ls)
        if before in _WORD or before in (0x2E, 0x2F, 0x2D, 0x3A) or self._after(buf, e, le) in _WORD:
            return [], None
        raw = buf[s:e]
        if len(raw) < 8:
            return [], None
        digits = raw.translate(None, b" ().-+").decode()
        n = len(digits)
        plus = raw[:1] == b"+"
        if n < 9 and not (plus and n >= 7):
            return [], None
        if n == 13 and not plus and digits[:3] in ("978", "979") and v.isbn13_ok(digits):
            return [], None  # a book number (ISO 2108): no card network or phone plan starts 978/979
        if 12 <= n <= 19 and not plus and (network := v.card_network(digits)) is not None and (
            v.luhn_ok(digits) or (not network[1] and self._card_context(buf, s, ls))
        ) and self._card_grouping_ok(raw):
            return [("CREDIT_CARD", PII, s, e, v.card_is_test_number(digits))], None
        if n == 9 and not plus:
            text = raw.decode()
            sep = text[3] if len(text) == 11 else ""
            shaped = sep in ("-", " ", ".") and text[6] == sep and text[:3].isdigit() and \
                text[4:6].isdigit() and text[7:].isdigit()
            context = any(w in buf[max(ls, s - 40):s].lower() for w in _SSN_WORDS)
            if ((shaped and (sep != "." or context)) or (text.isdigit() and context)) and v.ssn_ok(digits):
                return [("US_SSN", PII, s, e, digits in v.SSN_EXAMPLES)], None
        if n >= 18 and not plus and b" " in raw and len(raw) <= 512:
            found = self._split_run(buf, s, raw, ls)
            if found:
                phones = [p for p in self._phones(buf, s, e, ls, le, plus, n)
                          if not any(p[2] < f[3] and f[2] < p[3] for f in found)]
                return found + phones, None
        return self._phones(buf, s, e, ls, le, plus, n), None

    def _split_run(self, buf: bytes, s: int, raw: bytes, ls: int) -> list[tuple]:
        """Cards and SSNs inside one digit run that lists several, space-separated
        (``4532 0151 1283 0366 5425 2334 3010 9903``, ``536-22-8741 536-22-8742``): left to right,
        the longest run of whole groups that is one."""
        groups = [(m.start(), m.end()) for m in re.finditer(rb"[^ ]+", raw)]
        out: list[tuple] = []
        i = 0
        while i < len(groups):
            for j in range(min(len(groups), i + 6), i, -1):
                a, b = groups[i][0], groups[j - 1][1]
                piece = raw[a:b]
                digits = piece.translate(None, b" ().-+").decode()
                if not digits.isdigit():
                    continue
                if 12 <= len(digits) <= 19 and (network := v.card_network(digits)) is not None and (
                    v.luhn_ok(digits) or (not network[1] and self._card_context(buf, s, ls))
                ) and self._card_grouping_ok(piece):
                    out.append(("CREDIT_CARD", PII, s + a, s + b, v.card_is_test_number(digits)))
                    break
                if len(digits) == 9 and j == i + 1 and len(piece) == 11 and piece[3:4] == piece[6:7] == b"-" \
                        and v.ssn_ok(digits):
                    out.append(("US_SSN", PII, s + a, s + b, digits in v.SSN_EXAMPLES))
                    break
            else:
                i += 1
                continue
            i = j
        return out

    @staticmethod
    def _card_context(buf: bytes, s: int, ls: int) -> bool:
        return any(w in buf[max(ls, s - 40):s].lower() for w in _CARD_WORDS)

    @staticmethod
    def _card_grouping_ok(raw: bytes) -> bool:
        if set(raw) - set(b"0123456789 -."):
            return False
        groups = [len(g) for g in raw.replace(b"-", b" ").replace(b".", b" ").split(b" ") if g]
        if b"." in raw and (b" " in raw or b"-" in raw or len(set(groups[:-1])) > 1):
            return False  # dots only as one consistent separator: 4111.1111.1111.1111
        return len(groups) == 1 or all(2 <= g <= 7 for g in groups)

    _NANP = None

    def _phones(self, buf: bytes, s: int, e: int, ls: int, le: int, plus: bool, n: int) -> list[tuple]:
        raw = buf[s:e]
        if n > 15 * 2 + 2:
            return []
        if buf[e:e + 1] == b":" and self._after(buf, e + 1, le) in _ALNUM:
            return []  # "4079299660:AAF…": an id with something after a colon (a bot token), not a phone
        gate = plus or raw.startswith(b"00") or _PHONE_CONTEXT.search(buf, max(ls, s - 32), s) is not None
        if not gate:
            if Engine._NANP is None:
                Engine._NANP = re.compile(rb"(?:\(\d{3}\) ?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?!\d)")
            gate = Engine._NANP.search(raw) is not None
        if not gate and self._national_plans:
            gate = any(sep in raw for sep in (b" ", b"-", b"(", b"."))  # grouped as a number is written
        if not gate:
            return []
        import phonenumbers

        extension = _EXTENSION.match(buf, e, min(le, e + 24))
        end = extension.end() if extension else e
        text = self._text(buf, s, end)
        out: list[tuple] = []
        taken: list[tuple[int, int]] = []
        for region in self.phone_regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                a, b = match.start, match.end
                if any(a < y and x < b for x, y in taken):
                    continue
                taken.append((a, b))
                out.append(("PHONE", PII, s + len(text[:a].encode()), s + len(text[:b].encode()), False))
        return out

    def _h_vanity(self, buf, spans, s, e, ls, le):
        """``1-800-FLOWERS``: letters on the keypad; toll-free codes, or phone words before it."""
        if self._before(buf, s, ls) in _WORD or self._after(buf, e, le) in _WORD:
            return [], None
        raw = self._text(buf, s, e)
        if sum(ch.isalpha() for ch in raw) < 3:
            return [], None
        import phonenumbers

        dialled = "".join(ch for ch in phonenumbers.convert_alpha_characters_in_number(raw) if ch.isdigit())
        # letters past the seventh (1-800-MATTRESS) spell the word out and are not dialled
        dialled = dialled[:11] if dialled[:1] == "1" and len(dialled) > 10 else dialled[:10]
        area = dialled[1:4] if len(dialled) == 11 else dialled[:3]
        if area not in _TOLL_FREE and _PHONE_CONTEXT.search(buf, max(ls, s - 32), s) is None:
            return [], None
        try:
            number = phonenumbers.parse(dialled, "US")
        except phonenumbers.NumberParseException:
            return [], None
        if not phonenumbers.is_valid_number(number):
            return [], None
        return [("PHONE", PII, s, e, False)], None


def entity_types() -> dict[str, tuple[str, ...]]:
    """The types each kind can report."""
    return {PII: PII_TYPES + NER_TYPES, SECRET: SECRET_TYPES}


def _sql_cells(text: str) -> list[tuple[str, int, int]]:
    """``(column, start, end)`` of each quoted or bare value in ``INSERT INTO t (cols) VALUES (…), (…)``."""
    out: list[tuple[str, int, int]] = []
    for m in _SQL_INSERT.finditer(text):
        columns = [c.strip().strip('"`[]') for c in m.group(1).split(",")]
        pos = m.end()
        for _ in range(1000):  # rows
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos >= len(text) or text[pos] != "(":
                break
            pos += 1
            for column in columns:
                cell = _SQL_VALUE.match(text, pos)
                if cell is None:
                    break
                group = 1 if cell.group(1) is not None else 2
                out.append((column, cell.start(group), cell.end(group)))
                pos = cell.end()
                if cell.group(3) == ")":
                    break
    return out


def _grid_cells(text: str) -> list[tuple[str, int, int]]:
    """``(column, start, end)`` of the cells of CSV or Markdown tables: a header line, then rows with
    as many cells (Markdown's ``|---|`` line skipped)."""
    out: list[tuple[str, int, int]] = []
    lines, pos = [], 0
    for line in text.split("\n"):
        lines.append((pos, line))
        pos += len(line) + 1
    header: list[str] | None = None
    delimiter = ","
    for start, line in lines:
        body = line.rstrip("\r")
        pipe = body.strip().startswith("|")
        delim = "|" if pipe else ","
        if delim not in body:
            header = None
            continue
        cells = _split_cells(body, start, delim)
        if header is None or delim != delimiter or len(cells) != len(header):
            names = [text[a:b] for a, b in cells]
            header = [n.strip().strip('"').replace(" ", "_") for n in names]
            delimiter = delim
            continue
        if pipe and all(set(text[a:b].strip()) <= set("-: ") for a, b in cells):
            continue  # |---|---|
        for name, (a, b) in zip(header, cells):
            out.append((name, a, b))
    return out


def _split_cells(line: str, start: int, delim: str) -> list[tuple[int, int]]:
    """Spans (in the whole text) of the cells of one line, trimmed of spaces and quotes."""
    parts, pos = [], 0
    body = line
    if delim == "|":
        lead = len(body) - len(body.lstrip())
        body = body.strip()
        if body.startswith("|"):
            body, lead = body[1:], lead + 1
        if body.endswith("|"):
            body = body[:-1]
        pos = lead
    for piece in body.split(delim):
        a, b = pos, pos + len(piece)
        while a < b and line[a] in " \t\"'":
            a += 1
        while b > a and line[b - 1] in " \t\"'":
            b -= 1
        parts.append((start + a, start + b))
        pos += len(piece) + 1
    return parts
