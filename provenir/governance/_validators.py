"""Validators that run only on regex candidates: checksums, number plans, placeholder tests.

Cheap pure functions; nothing here is called for text the prefilter found clean.
"""

from __future__ import annotations

import base64
import re
import functools
import ipaddress
import math
import zlib
from collections import Counter

# ISO 13616 IBAN lengths by country (SWIFT IBAN registry).
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}


def luhn_ok(digits: str) -> bool:
    total = 0
    for index, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if index & 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# Card networks by IIN range and length, from the networks' published ranges as collected in
# ISO/IEC 7812 registrations (Visa, Mastercard 2-series, Amex, Discover Global Network incl. Diners
# and RuPay/UnionPay acceptance, JCB, Mir (NSPK), RuPay (NPCI), Dankort (Nets), UATP, Verve, Troy).
# (first IIN, last IIN, prefix length, lengths, Luhn used); first match wins, so narrow ranges first.
_CARD_RANGES: tuple[tuple[str, int, int, int, tuple[int, ...], bool], ...] = (
    ("dankort", 5019, 5019, 4, (16,), True),
    ("visa_dankort", 4571, 4571, 4, (16,), True),
    ("mir", 2200, 2204, 4, (16, 17, 18, 19), True),
    ("borica", 2205, 2205, 4, (16,), True),
    ("verve", 506099, 506198, 6, (16, 18, 19), True),
    ("verve", 650002, 650027, 6, (16, 18, 19), True),
    ("verve", 507865, 507964, 6, (16, 18, 19), True),
    ("rupay", 508, 508, 3, (16,), True),
    ("rupay", 353, 353, 3, (16,), True),
    ("rupay", 356, 356, 3, (16,), True),
    ("rupay", 60, 60, 2, (16,), True),
    ("rupay", 81, 82, 2, (16,), True),
    ("troy", 9792, 9792, 4, (16,), True),
    ("lankapay", 357111, 357111, 6, (16,), True),
    ("discover", 622126, 622925, 6, (16, 17, 18, 19), True),
    ("discover", 6011, 6011, 4, (16, 17, 18, 19), True),
    ("discover", 644, 649, 3, (16, 17, 18, 19), True),
    ("discover", 65, 65, 2, (16, 17, 18, 19), True),
    ("unionpay", 62, 62, 2, (16, 17, 18, 19), False),
    ("unionpay", 8100, 8171, 4, (16, 17, 18, 19), True),
    ("visa", 4, 4, 1, (13, 16, 19), True),
    ("mastercard", 51, 55, 2, (16,), True),
    ("mastercard", 2221, 2720, 4, (16,), True),
    ("amex", 34, 34, 2, (15,), True),
    ("amex", 37, 37, 2, (15,), True),
    ("jcb", 3528, 3589, 4, (16, 17, 18, 19), True),
    ("diners", 300, 305, 3, (14, 15, 16, 17, 18, 19), True),
    ("diners", 3095, 3095, 4, (14, 15, 16, 17, 18, 19), True),
    ("diners", 36, 36, 2, (14, 15, 16, 17, 18, 19), True),
    ("diners", 38, 39, 2, (14, 16, 17, 18, 19), True),
    ("interpayment", 636, 636, 3, (16, 17, 18, 19), True),
    ("instapayment", 637, 639, 3, (16,), True),
    ("maestro", 5018, 5018, 4, tuple(range(12, 20)), True),
    ("maestro", 5020, 5020, 4, tuple(range(12, 20)), True),
    ("maestro", 5038, 5038, 4, tuple(range(12, 20)), True),
    ("maestro", 5893, 5893, 4, tuple(range(12, 20)), True),
    ("maestro", 6304, 6304, 4, tuple(range(12, 20)), True),
    ("maestro", 6759, 6759, 4, tuple(range(12, 20)), True),
    ("maestro", 6761, 6763, 4, tuple(range(12, 20)), True),
    ("maestro", 50, 50, 2, tuple(range(12, 20)), True),
    ("maestro", 56, 59, 2, tuple(range(12, 20)), True),
    ("maestro", 60, 69, 2, tuple(range(12, 20)), True),
    ("uatp", 1, 1, 1, (15,), True),
)


_CARD_BY_FIRST_DIGIT: dict[str, tuple[tuple[str, int, int, int, tuple[int, ...], bool], ...]] = {
    first: tuple(r for r in _CARD_RANGES if str(r[1])[0] == first) for first in "0123456789"
}
assert all(str(r[1])[0] == str(r[2])[0] for r in _CARD_RANGES)  # a range never spans two first digits


def card_network(digits: str) -> tuple[str, bool] | None:
    """``(network, uses_luhn)`` for the first network whose IIN range and length ``digits`` fits."""
    n = len(digits)
    for name, low, high, width, lengths, luhn in _CARD_BY_FIRST_DIGIT[digits[0]]:
        if n in lengths and low <= int(digits[:width]) <= high:
            return name, luhn
    return None


def card_brand(digits: str) -> str | None:
    """The card network whose IIN range and length ``digits`` fits, else ``None``."""
    found = card_network(digits)
    return found[0] if found else None


def card_ok(digits: str) -> bool:
    """A number some network issues: IIN range and length, and Luhn where that network uses it."""
    found = card_network(digits)
    if found is None:
        return False
    return luhn_ok(digits) or not found[1]


# Published test card numbers (Stripe, Braintree/PayPal, Adyen, Worldpay and the networks' own test
# ranges): reported as placeholders, never silently dropped.
TEST_CARD_NUMBERS = frozenset({
    "4111111111111111", "4012888888881881", "4222222222222", "4242424242424242", "4000056655665556",
    "4000000000000002", "4000000000009995", "4000000000000077", "4000000000003220", "4000002500003155",
    "4000000000000069", "4000000000000127", "4000000000000119", "4000000000000341", "4012000033330026",
    "4035501000000008", "4003600000000014", "4917610000000000", "4444333322221111", "4462030000000000",
    "4917300800000000", "4484070000000000", "4001919257537193", "4007702835532454", "4263982640269299",
    "4000000000001000", "4000000000001091", "4000000000003063",
    "5555555555554444", "5105105105105100", "5200828282828210", "2223003122003222", "5454545454545454",
    "2223000048400011", "5431111111111111", "5500000000000004", "5185540000000019", "2221000000000009",
    "5577000055770004", "5100290029002909", "5425233430109903", "2222400070000005",
    "378282246310005", "371449635398431", "378734493671000", "340000000000009", "370000000000002",
    "371111111111114", "343434343434343",
    "6011111111111117", "6011000990139424", "6011000400000000", "6011601160116611", "6445644564456445",
    "6011000000000004",
    "3530111333300000", "3566002020360505", "3566111111111113", "3569990010095841", "3528000700000000",
    "30569309025904", "38520000023237", "36227206271667", "36006666333344", "30000000000004",
    "36148900647913", "3056930009020004", "36259600000004",
    "6200000000000005", "6205500000000000004", "6250941006528599", "6243030000000001",
    "6212345678901265", "6221558812340000", "6250946000000016",
    "5019717010103742", "5019555544445555", "4571000000000001",
    "6759649826438453", "6304000000000000", "6799990100000000019", "5018000000000009",
    "6771798021000008", "5000550000000029", "6759000000000000005",
    "2200000000000004", "2201382000000013", "2200770212727079",
    "6070000000000000", "6521111111111117", "6074000000000000", "6522111111111111",
    "135410014004955", "122000000000003",
})


def card_is_test_number(digits: str) -> bool:
    """A published test number, or an obviously synthetic one (``4111…1``, ``4242…``, ``5105105…``)."""
    if digits in TEST_CARD_NUMBERS:
        return True
    body = digits[:-1]
    if len(set(body[1:])) <= 1:
        return True
    return any(all(body[i] == body[i + p] for i in range(len(body) - p)) for p in (2, 3, 4))


# SSNs the SSA says were used in advertising or are otherwise published examples (reported as
# placeholders): the Woolworth wallet card 078-05-1120, 219-09-9999 (SSA pamphlet), 457-55-5462
# (LifeLock's advertised number), 123-45-6789 (the common example).
SSN_EXAMPLES = frozenset({"078051120", "219099999", "457555462", "123456789"})


def ssn_ok(digits: str) -> bool:
    """US SSN structure (SSA rules): area not 000/666/9xx, group not 00, serial not 0000."""
    if len(digits) != 9:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return len(set(digits)) > 1


def isbn13_ok(digits: str) -> bool:
    """ISBN-13 check digit (ISO 2108): weights 1, 3, 1, 3, … over all 13 digits sum to 0 mod 10."""
    return sum((ord(ch) - 48) * (3 if i & 1 else 1) for i, ch in enumerate(digits)) % 10 == 0


_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def base62_crc32_ok(token: str) -> bool:
    """GitHub's and npm's checksum: the last 6 characters are the base62 CRC32 of the 30 before them.

    https://github.blog/2021-04-05-behind-githubs-new-authentication-token-formats/ and
    https://github.blog/2021-09-23-announcing-npms-new-access-token-format/ (token = prefix_ +
    30 random base62 characters + 6-character base62 CRC32 of those 30, zero-padded).
    """
    body = token[token.index("_") + 1:]
    if len(body) != 36:
        return False
    value = zlib.crc32(body[:30].encode("ascii", "replace"))
    digits = []
    while value:
        value, rest = divmod(value, 62)
        digits.append(_BASE62[rest])
    return "".join(reversed(digits)).rjust(6, "0") == body[30:]


def iban_valid_length(compact: str) -> int:
    """Length of the valid IBAN that ``compact`` starts with (0 when none): country length + mod-97."""
    length = IBAN_LENGTHS.get(compact[:2])
    if length is None or len(compact) < length:
        return 0
    candidate = compact[:length]
    if not candidate[2:4].isdigit():
        return 0
    rearranged = candidate[4:] + candidate[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in rearranged))
    except ValueError:
        return 0
    return length if number % 97 == 1 else 0


def ipv4_ok(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def ipv6_ok(text: str) -> bool:
    if text.count(":") < 2 or not any(ch.isdigit() for ch in text):
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def shannon_entropy(value: str) -> float:
    """Bits per character (the measure detect-secrets' high-entropy plugins use)."""
    if not value:
        return 0.0
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in Counter(value).values())


@functools.lru_cache(maxsize=1)
def _detect_secrets_heuristics() -> tuple:
    from detect_secrets.filters.heuristic import (
        is_potential_uuid,
        is_sequential_string,
        is_templated_secret,
    )
    from detect_secrets.plugins.jwt import JwtTokenDetector

    return is_sequential_string, is_templated_secret, is_potential_uuid, JwtTokenDetector.is_formally_valid


def jwt_ok(token: str) -> bool:
    """detect-secrets' JWT check: every part is base64url, header and payload are JSON."""
    return bool(_detect_secrets_heuristics()[3](token))


def is_uuid(value: str) -> bool:
    return bool(_detect_secrets_heuristics()[2](value))


# Values that vendor docs publish as examples; reported as placeholders, never as live secrets.
KNOWN_EXAMPLE_VALUES = frozenset({
    "AKIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "AKIAI44QH8DHBEXAMPLE",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
    "sk_test_BQokikJOvBiI2HlWgH4olfQ2",
    "rk_test_51H8e4fAbcdEfghIjklMnopQrStUvWxYz",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
    "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "xoxb-not-a-real-token-this-will-not-work",
    "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
})
_PLACEHOLDER_MARKERS = (
    "example", "xxxx", "your_", "your-", "yourkey", "your key", "dummy", "fake", "sample",
    "placeholder", "redacted", "changeme", "change_me", "change-me", "not-a-real", "notreal",
    "replace_me", "replaceme", "insert_", "****", "...", "0000000000", "1234567890", "abcdef123456",
    "test-key", "testkey", "secret_here", "key_here", "token_here",
)


def is_placeholder(value: str) -> bool:
    """A documented example or an obvious stand-in (``EXAMPLE``, ``xxxx``, ``your_key``, ``1234…``)."""
    if value in KNOWN_EXAMPLE_VALUES:
        return True
    low = value.lower()
    if any(marker in low for marker in _PLACEHOLDER_MARKERS):
        return True
    body = value.split("_")[-1] if value.count("_") >= 2 else value
    if len(body) >= 8 and len(set(body)) <= 3:
        return True
    sequential = _detect_secrets_heuristics()[0]
    return bool(sequential(value))


_REFERENCE_STARTS = ("$", "%", "@", "&", "*")
_SIGIL_REFERENCE = re.compile(
    r"[$%@&*][A-Za-z_][A-Za-z0-9_.:\-]*%?"           # $VAR, %VAR%, @var, &anchor, *alias, $env:NAME
    r"|\$\{.*\}|\$\(.*\)"                          # ${VAR:-x}, $(command)
    r"|%(?:\([A-Za-z_]\w*\))?[-#0 +]*\d*(?:\.\d+)?[sdifrxX]"  # printf-style %s, %(name)s
    r"|[*]+", re.S)


def is_reference(value: str) -> bool:
    """A value that points at a secret instead of being one: ``${VAR}``, ``{{ x }}``, ``<PASS>``,
    ``os.environ[...]``, ``getenv(``, ``args.password``, ``None``."""
    v = value.strip("\"'`")
    if not v:
        return True
    if v[0] in _REFERENCE_STARTS and _SIGIL_REFERENCE.fullmatch(v):
        return True  # $VAR, ${VAR}, $(cmd), %s, %(name)s, %VAR%, @var, *alias — not "%FZng**aY2pfg!M"
    if (v[0] == "<" and v[-1] == ">") or (v[0] == "[" and v[-1] == "]"):
        return True
    if "{{" in v or "${" in v or "(" in v or "env[" in v or "environ" in v:
        return True
    if v.lower() in {"none", "null", "nil", "true", "false", "str", "string", "bytes", "int",
                     "required", "optional", "undefined", "empty", "secret", "password", "token",
                     "hidden", "self", "n/a", "na", "tbd"}:
        return True
    templated = _detect_secrets_heuristics()[1]
    if templated(v):
        return True
    parts = v.split(".")
    return len(parts) > 1 and all(p.isidentifier() for p in parts) and not any(c.isdigit() for c in v)


def base64_of_prose(value: str) -> bool:
    """True when ``value`` is base64 that decodes to readable text (not a key)."""
    text = value.strip("=")
    if len(text) < 16:
        return False
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None,
                               validate=True)
    except (ValueError, TypeError):
        return False
    if not raw:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in raw)
    return printable / len(raw) > 0.95 and b" " in raw


def looks_random(value: str, *, min_length: int = 16) -> bool:
    """High-entropy test for values in secret-like contexts (length, mixed classes, entropy)."""
    if len(value) < min_length or base64_of_prose(value):
        return False
    has_digit = any(ch.isdigit() for ch in value)
    has_alpha = any(ch.isalpha() for ch in value)
    if not (has_digit and has_alpha):
        return False
    entropy = shannon_entropy(value)
    is_hex = all(ch in "0123456789abcdefABCDEF" for ch in value)
    return entropy >= (3.0 if is_hex else 3.5)
