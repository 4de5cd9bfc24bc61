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
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "GITHUB_FINE_GRAINED_TOKEN",
    "SLACK_TOKEN", "SLACK_WEBHOOK", "STRIPE_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY", "JWT", "PRIVATE_KEY", "URL_CREDENTIALS", "PASSWORD_ASSIGNMENT",
    "HIGH_ENTROPY_SECRET",
)
PII, SECRET = "pii", "secret"

_ASSIGN = r"[\"']?[ \t]*(?::=|=>|==|[:=])[ \t]*"
_VALUE = r"\"[^\"\n\x00]+\"|'[^'\n\x00]+'|[^\s\"'`,;\x00]+"

# (group name, pattern). Order = priority at the same start position. Counted repetitions are kept
# out on purpose (they multiply RE2's program and DFA size, and dense text then falls off the DFA);
# lengths and exact shapes are checked in Python on the candidates.
_ALTERNATIVES: list[tuple[str, str]] = [
    ("pem", r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----"),
    ("url_cred", r"[A-Za-z][A-Za-z0-9+.\-]*://(?P<url_user>[^\s/?#@:\"'`<>\x00]+):"
                 r"(?P<url_pass>[^\s/?#@\"'`<>\x00]+)@[A-Za-z0-9.\-\[\]]+"),
    ("slack_hook", r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9_/\-]+"),
    ("aws_akid", r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]+"),
    ("aws_secret", r"(?i:aws)[A-Za-z0-9_.\-]*(?i:secret)[A-Za-z0-9_.\-]*" + _ASSIGN
                   + r"[\"']?(?P<aws_secret_val>[A-Za-z0-9/+]+)"),
    ("gh_fine", r"github_pat_[A-Za-z0-9_]+"),
    ("gh", r"gh[pousr]_[A-Za-z0-9]+"),
    ("slack", r"xox[abposrce]-[A-Za-z0-9\-]+"),
    ("stripe", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]+"),
    ("google", r"AIza[0-9A-Za-z_\-]+"),
    ("anthropic", r"sk-ant-(?:api|admin|sid)[0-9][0-9]-[A-Za-z0-9_\-]+"),
    ("openai", r"sk-[A-Za-z0-9_\-]+"),
    ("jwt", r"eyJ[A-Za-z0-9_\-]+\.eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"),
    ("bearer", r"(?i:bearer)[ \t]+(?P<bearer_val>[A-Za-z0-9._~+/\-]+=*)"),
    ("pw", r"(?i:[A-Za-z0-9_\-]*(?:password|passwd|passphrase|pwd))" + _ASSIGN
           + r"(?P<pw_val>" + _VALUE + ")"),
    ("kv", r"(?i:[A-Za-z0-9_\-]*(?:secret|token|api[_\-]?key|apikey|access[_\-]?key|"
           r"private[_\-]?key|signing[_\-]?key|encryption[_\-]?key|master[_\-]?key|"
           r"credentials?|auth))" + _ASSIGN + r"(?P<kv_val>" + _VALUE + ")"),
    ("email", r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]+"),
    ("ipv6", r"[0-9A-Fa-f]*(?::[0-9A-Fa-f]*){2,}(?:[0-9]+(?:\.[0-9]+){3})?"),
    ("ipv4", r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+"),
    ("iban", r"[A-Z][A-Z][0-9][0-9](?: ?[A-Z0-9])+"),
    # phone/card/SSN candidates: 7+ digits after "+", else 9+ digits, at most 2 separators apart
    ("num", r"\+[0-9](?:[ ().\-]{0,2}[0-9]){6,}|\(?[0-9](?:[ ().\-]{0,2}[0-9]){8,}"),
]

# minimum lengths (and exact lengths) of the vendor tokens, checked on candidates
_MIN_LEN = {"aws_akid": (20, 20), "gh": (40, 255), "slack": (15, 255), "stripe": (24, 255),
            "google": (39, 39), "anthropic": (50, 300), "slack_hook": (60, 300)}

_SIMPLE_SECRETS = {
    "gh_fine": "GITHUB_FINE_GRAINED_TOKEN", "gh": "GITHUB_TOKEN", "slack": "SLACK_TOKEN",
    "stripe": "STRIPE_KEY", "google": "GOOGLE_API_KEY", "anthropic": "ANTHROPIC_API_KEY",
    "aws_akid": "AWS_ACCESS_KEY_ID", "slack_hook": "SLACK_WEBHOOK",
}
_SPECIFIC_SECRET_GROUPS = frozenset(_SIMPLE_SECRETS) | {"openai", "jwt", "pem", "aws_secret", "url_cred"}
_GROUP_TYPES: dict[str, tuple[str, ...]] = {
    **{g: (t,) for g, t in _SIMPLE_SECRETS.items()},
    "pem": ("PRIVATE_KEY",), "url_cred": ("URL_CREDENTIALS",), "aws_secret": ("AWS_SECRET_ACCESS_KEY",),
    "openai": ("OPENAI_API_KEY",), "jwt": ("JWT",), "bearer": ("HIGH_ENTROPY_SECRET", "JWT"),
    "pw": ("PASSWORD_ASSIGNMENT",), "kv": ("HIGH_ENTROPY_SECRET",), "email": ("EMAIL",),
    "ipv6": ("IP_ADDRESS",), "ipv4": ("IP_ADDRESS",), "iban": ("IBAN",),
    "num": ("CREDIT_CARD", "US_SSN", "PHONE"),
}
_WORD = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ALNUM = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
_B64 = _ALNUM | frozenset(b"+/=_-")
_PHONE_WORDS = (b"phone", b"tel", b"call", b"mobile", b"cell", b"fax", b"whatsapp", b"sms",
                b"text me", b"contact", b"dial", b"reach me", b"number")
_PHONE_CONTEXT = re.compile(
    b"(?i)" + b"|".join(re.escape(w) for w in _PHONE_WORDS))
_SSN_WORDS = (b"ssn", b"social security", b"social-security", b"ss#", b"ss #")
_VERSION_WORDS = (b"v", b"version", b"ver", b"ver.", b"release", b"build", b"python", b"node")

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
def _compiled(groups: tuple[str, ...]) -> tuple[Any, list[tuple[int, str]], dict[str, int]]:
    from re2 import _re2  # google-re2's binding: bytes in, byte spans out, no per-call re-encoding

    global _UNANCHORED
    _UNANCHORED = _re2.RE2.Anchor.UNANCHORED
    pattern = "|".join(f"(?P<{name}>{pat})" for name, pat in _ALTERNATIVES if name in groups)
    options = _re2.RE2.Options()
    options.max_mem = 256 << 20  # the default budget makes dense batches fall back to a slow path
    regex = _re2.RE2(pattern.encode(), options)
    if not regex.ok():  # pragma: no cover - patterns are static
        raise RuntimeError(regex.error())
    named = {name: index for name, index in regex.NamedCapturingGroups()}
    named = {k.decode() if isinstance(k, bytes) else k: i for k, i in named.items()}
    # exactly one top-level alternative takes part in a match, so the lookup order is free: the
    # most frequent candidates (digit runs, addresses) are checked first
    top = [(named[name], name) for name, _ in reversed(_ALTERNATIVES) if name in groups]
    return regex, top, named


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
        wanted = self.pii_types | self.secret_types
        groups = tuple(name for name, _ in _ALTERNATIVES
                       if set(_GROUP_TYPES.get(name, ())) & wanted or name in ("pw", "kv"))
        if not self.secret_types:
            groups = tuple(g for g in groups if g not in ("pw", "kv"))
        self._groups = groups
        self._regex, self._top, self._named = _compiled(groups) if groups else (None, [], {})
        self._handlers: dict[str, Callable[..., Any]] = {
            name: getattr(self, f"_h_{name}") for name in groups
        }

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
        top = self._top
        end = len(buf)
        chunk_end = -1  # the chunk of the last match: its end, first byte, record, leaf layout
        chunk_start = ri = 0
        begins: list[int] = []
        lengths: list[int] = []
        p = 0
        while p < end:
            spans = match(_UNANCHORED, buf, p, end)
            s, e = spans[0]
            if s < 0:
                break
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
        return scans

    # -- helpers -----------------------------------------------------------------------------------
    @staticmethod
    def _before(buf: bytes, s: int, ls: int) -> int:
        return buf[s - 1] if s > ls else 0

    @staticmethod
    def _after(buf: bytes, e: int, le: int) -> int:
        return buf[e] if e < le else 0

    def _group(self, spans: Any, name: str) -> tuple[int, int]:
        return spans[self._named[name]]

    def _specific_secret_inside(self, buf: bytes, vs: int, ve: int) -> bool:
        spans = self._regex.Match(_UNANCHORED, buf, vs, ve)
        if spans[0][0] < 0:
            return False
        name = next(n for gi, n in self._top if spans[gi][0] >= 0)
        return name in _SPECIFIC_SECRET_GROUPS or name == "bearer"

    @staticmethod
    def _text(buf: bytes, s: int, e: int) -> str:
        return buf[s:e].decode("utf-8", "surrogatepass")

    # -- secrets -------------------------------------------------------------------------------
    def _simple(self, name: str, buf: bytes, s: int, e: int, ls: int, le: int):
        if self._before(buf, s, ls) in _ALNUM or self._after(buf, e, le) in _WORD:
            return [], None
        low, high = _MIN_LEN.get(name, (0, 1 << 30))
        if not low <= e - s <= high:
            return [], None
        value = self._text(buf, s, e)
        return [(_SIMPLE_SECRETS[name], SECRET, s, e, v.is_placeholder(value))], None

    def _h_aws_akid(self, buf, spans, s, e, ls, le):
        return self._simple("aws_akid", buf, s, e, ls, le)

    def _h_gh_fine(self, buf, spans, s, e, ls, le):
        body = buf[s + 11:e].split(b"_")
        if len(body) != 2 or len(body[0]) != 22 or len(body[1]) != 59:
            return [], None
        return self._simple("gh_fine", buf, s, e, ls, le)

    def _h_gh(self, buf, spans, s, e, ls, le):
        return self._simple("gh", buf, s, e, ls, le)

    def _h_slack(self, buf, spans, s, e, ls, le):
        return self._simple("slack", buf, s, e, ls, le)

    def _h_stripe(self, buf, spans, s, e, ls, le):
        return self._simple("stripe", buf, s, e, ls, le)

    def _h_google(self, buf, spans, s, e, ls, le):
        return self._simple("google", buf, s, e, ls, le)

    def _h_anthropic(self, buf, spans, s, e, ls, le):
        return self._simple("anthropic", buf, s, e, ls, le)

    def _h_slack_hook(self, buf, spans, s, e, ls, le):
        if e - s < _MIN_LEN["slack_hook"][0]:
            return [], None
        value = self._text(buf, s, e)
        return [("SLACK_WEBHOOK", SECRET, s, e, v.is_placeholder(value))], None

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

    def _h_pem(self, buf, spans, s, e, ls, le):
        marker = buf.find(b"-----END", e, le)
        if marker >= 0:
            close = buf.find(b"-----", marker + 8, le)
            end = close + 5 if close >= 0 else le
        else:
            end = le
        body = self._text(buf, e, marker if marker >= 0 else end)
        compact = "".join(body.split())
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
        if self._specific_secret_inside(buf, vs, ve):
            return [], vs
        value = self._text(buf, vs, ve)
        if v.is_reference(value) or not v.looks_random(value):
            return [], vs
        return [("HIGH_ENTROPY_SECRET", SECRET, vs, ve, v.is_placeholder(value))], vs

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
        if len(value) < 4 or v.is_reference(value) or self._specific_secret_inside(buf, vs, ve):
            return [], vs
        if not quoted and b":" in buf[s:vs] and value.isalpha() and (value.islower() or value.istitle()):
            return [], vs  # prose: "Password: required", "password: reset it"
        if value.isidentifier() and "_" in value and value.lower() == value:
            return [], vs  # a variable name: password=db_password
        return [("PASSWORD_ASSIGNMENT", SECRET, vs, ve, v.is_placeholder(value))], vs

    def _h_kv(self, buf, spans, s, e, ls, le):
        if self._before(buf, s, ls) in _WORD:
            return [], None
        vs, ve, value, _ = self._assignment_value(buf, spans, "kv_val")
        if v.is_reference(value) or self._specific_secret_inside(buf, vs, ve):
            return [], vs
        if not v.looks_random(value):
            return [], vs
        return [("HIGH_ENTROPY_SECRET", SECRET, vs, ve, v.is_placeholder(value))], vs

    # -- PII -----------------------------------------------------------------------------------
    def _h_email(self, buf, spans, s, e, ls, le):
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
        context = buf[max(ls, s - 10):s].lower().rstrip(b" :=")
        if context.endswith(_VERSION_WORDS):
            return [], None
        if not v.ipv4_ok(self._text(buf, s, e)):
            return [], None
        return [("IP_ADDRESS", PII, s, e, False)], None

    def _h_ipv6(self, buf, spans, s, e, ls, le):
        before, after = self._before(buf, s, ls), self._after(buf, e, le)
        if before in _WORD or before in (0x3A, 0x2E) or after in _WORD:
            return [], None
        if not v.ipv6_ok(self._text(buf, s, e)):
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
        separators = set(raw) - set(b"0123456789")
        if 13 <= n <= 19 and not plus and separators <= {0x20, 0x2D} and v.card_brand(digits) \
                and v.luhn_ok(digits) and self._card_grouping_ok(raw):
            return [("CREDIT_CARD", PII, s, e, False)], None
        if n == 9 and not plus:
            text = raw.decode()
            shaped = len(text) == 11 and text[3] == text[6] and text[3] in "- " and \
                text[:3].isdigit() and text[4:6].isdigit() and text[7:].isdigit()
            context = buf[max(ls, s - 40):s].lower()
            if (shaped or (text.isdigit() and any(w in context for w in _SSN_WORDS))) and v.ssn_ok(digits):
                return [("US_SSN", PII, s, e, False)], None
        return self._phones(buf, s, e, ls, plus, n), None

    @staticmethod
    def _card_grouping_ok(raw: bytes) -> bool:
        groups = [len(g) for g in raw.replace(b"-", b" ").split(b" ")]
        return len(groups) == 1 or all(3 <= g <= 6 for g in groups)

    _NANP = None

    def _phones(self, buf: bytes, s: int, e: int, ls: int, plus: bool, n: int) -> list[tuple]:
        raw = buf[s:e]
        if n > 15 * 2 + 2:
            return []
        gate = plus or raw.startswith(b"00") or _PHONE_CONTEXT.search(buf, max(ls, s - 32), s) is not None
        if not gate:
            if Engine._NANP is None:
                import re

                Engine._NANP = re.compile(rb"(?:\(\d{3}\) ?|\d{3}[ .\-])\d{3}[ .\-]\d{4}(?!\d)")
            gate = Engine._NANP.search(raw) is not None
        if not gate:
            return []
        import phonenumbers

        text = raw.decode()
        out: list[tuple] = []
        taken: list[tuple[int, int]] = []
        for region in self.phone_regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID):
                a, b = match.start, match.end
                if any(a < y and x < b for x, y in taken):
                    continue
                taken.append((a, b))
                out.append(("PHONE", PII, s + a, s + b, False))
        return out


def entity_types() -> dict[str, tuple[str, ...]]:
    """The types each kind can report."""
    return {PII: PII_TYPES + NER_TYPES, SECRET: SECRET_TYPES}
