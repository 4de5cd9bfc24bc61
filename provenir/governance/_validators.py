"""Validators that run only on regex candidates: checksums, number plans, placeholder tests.

Cheap pure functions; nothing here is called for text the prefilter found clean.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import math
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


def card_brand(digits: str) -> str | None:
    """The card network whose IIN range and length ``digits`` fits, else ``None``."""
    n = len(digits)
    p2, p3, p4, p6 = int(digits[:2]), int(digits[:3]), int(digits[:4]), int(digits[:6])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (p4 == 6011 or p2 == 65 or 644 <= p3 <= 649 or 622126 <= p6 <= 622925) and 16 <= n <= 19:
        return "discover"
    if 3528 <= p4 <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= p3 <= 305 or p2 in (36, 38, 39) or p4 == 3095) and 14 <= n <= 19:
        return "diners"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    if p4 in (5018, 5020, 5038, 5893, 6304, 6759, 6761, 6762, 6763) and 12 <= n <= 19:
        return "maestro"
    return None


_SSN_ADVERTISING = {"078051120", "219099999", "123456789", "457555462"}


def ssn_ok(digits: str) -> bool:
    """US SSN structure: area not 000/666/9xx, group not 00, serial not 0000, not a known sample."""
    if len(digits) != 9 or digits in _SSN_ADVERTISING:
        return False
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
        return False
    return len(set(digits)) > 1


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


def is_reference(value: str) -> bool:
    """A value that points at a secret instead of being one: ``${VAR}``, ``{{ x }}``, ``<PASS>``,
    ``os.environ[...]``, ``getenv(``, ``args.password``, ``None``."""
    v = value.strip("\"'`")
    if not v:
        return True
    if v[0] in _REFERENCE_STARTS or (v[0] == "<" and v[-1] == ">") or (v[0] == "[" and v[-1] == "]"):
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
