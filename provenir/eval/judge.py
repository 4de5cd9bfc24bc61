"""LLM judges: the :class:`LLMJudge` protocol, a deterministic stub, a disk cache, and API judges.

* :class:`StubJudge` — deterministic, no API; a documented lexical heuristic (for tests, demos, CI).
* :class:`CachedJudge` — wraps any judge; results are stored on disk under a SHA-256 key over the
  judge's identity, the method and its inputs. Writes are atomic (temp file + rename), so several
  processes can share one cache directory: a reader sees a whole entry or none, and a damaged entry
  is treated as a miss and rewritten.
* :class:`AnthropicJudge`, :class:`OpenAIJudge` — on the official client libraries. The model must
  answer with one JSON object; a reply that is not valid JSON is repaired locally (code fences,
  surrounding prose, trailing commas, single quotes) and, failing that, the model is asked once more
  with the parse error. Rate limits (429), server errors (5xx), time-outs and dropped connections are
  retried with exponential back-off (``Retry-After`` is honoured); an authentication failure raises
  :class:`JudgeAuthError` at once. Pairwise judgements are asked in both orders to control position
  bias: when the two orders disagree the result is a tie with lower confidence.
  ``OpenAIJudge(base_url=...)`` talks to any OpenAI-compatible server (vLLM, llama.cpp, TGI).

Example:
    >>> judge = StubJudge()
    >>> judge.score_pairwise("Name the capital of France.", "Paris is the capital of France.", "").preferred
    'a'
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from provenir.core.errors import ConfigError, ProvenirError
from provenir.core.hashing import sha256_json
from provenir.core.io import atomic_write_text
from provenir.eval._text import content_words

__all__ = [
    "AnthropicJudge",
    "CachedJudge",
    "JudgeAuthError",
    "JudgeError",
    "JudgeResponseError",
    "JudgeUnavailableError",
    "LLMJudge",
    "OpenAIJudge",
    "Preference",
    "StubJudge",
    "judge_identity",
]

_PREFERENCES = ("a", "b", "tie")


class JudgeError(ProvenirError):
    """A judge could not produce a judgement."""


class JudgeAuthError(JudgeError):
    """The judge's API refused the credentials (HTTP 401/403)."""


class JudgeResponseError(JudgeError):
    """The judge's reply could not be parsed into the expected JSON, even after repair."""


class JudgeUnavailableError(JudgeError):
    """The judge's API kept failing (rate limits, server errors, time-outs) after every retry."""


@dataclass
class Preference:
    """A pairwise judgement: which response is better, how sure the judge is, and why.

    Attributes:
        preferred: ``"a"``, ``"b"`` or ``"tie"``.
        confidence: 0.0–1.0.
        rationale: the judge's short explanation.
    """

    preferred: str
    confidence: float
    rationale: str

    def __post_init__(self) -> None:
        if self.preferred not in _PREFERENCES:
            raise JudgeError(f"Preference.preferred must be 'a', 'b' or 'tie', got {self.preferred!r}")
        confidence = float(self.confidence)
        if not 0.0 <= confidence <= 1.0:
            raise JudgeError(f"Preference.confidence must be within [0, 1], got {self.confidence!r}")
        self.confidence = confidence


@runtime_checkable
class LLMJudge(Protocol):
    """What every judge provides. Rubric scores are floats in [0, 1], one per criterion."""

    def score_pairwise(self, prompt: str, response_a: str, response_b: str) -> Preference: ...

    def score_rubric(self, prompt: str, response: str, criteria: list[str]) -> dict[str, float]: ...


def judge_identity(judge: Any) -> str:
    """The string that identifies a judge's behaviour in cache keys.

    A judge may define an ``identity`` attribute (the API judges include vendor, model, prompt
    version and sampling settings); otherwise the class's qualified name is used, so a custom judge
    whose behaviour depends on its settings should define ``identity``.
    """
    identity = getattr(judge, "identity", None)
    if isinstance(identity, str) and identity:
        return identity
    cls = type(judge)
    return f"{cls.__module__}.{cls.__qualname__}"


# --------------------------------------------------------------------------------------------------
# StubJudge


class StubJudge:
    """A deterministic judge that needs no API: a lexical heuristic, for tests and offline demos.

    A response's quality is ``0.6 * coverage + 0.2 * length + 0.2 * diversity`` where *coverage* is
    the share of the prompt's content words (stop words removed) that the response uses, *length* is
    ``min(1, content words / 20)`` and *diversity* is the share of distinct content words; an empty
    response scores 0. Pairwise: the higher quality wins; qualities within ``tie_margin`` are a tie
    with confidence 0.5, otherwise confidence is ``0.5 + min(0.5, |difference|)``. Swapping the two
    responses swaps the verdict. Rubric: per criterion ``0.7 * quality + 0.3 * the share of the
    criterion's content words found in the response``, rounded to 4 decimals.
    """

    def __init__(self, tie_margin: float = 1e-6):
        if tie_margin < 0:
            raise ConfigError(f"StubJudge(tie_margin={tie_margin}): must be >= 0")
        self.tie_margin = tie_margin

    @property
    def identity(self) -> str:
        return f"provenir.stub-judge:v1:tie_margin={self.tie_margin}"

    @staticmethod
    def quality(prompt: str, response: str) -> float:
        """The heuristic quality of ``response`` for ``prompt``, in [0, 1]."""
        words = content_words(response)
        if not words:
            return 0.0
        prompt_words = set(content_words(prompt))
        coverage = len(prompt_words & set(words)) / len(prompt_words) if prompt_words else 0.0
        length = min(1.0, len(words) / 20.0)
        diversity = len(set(words)) / len(words)
        return round(0.6 * coverage + 0.2 * length + 0.2 * diversity, 6)

    def score_pairwise(self, prompt: str, response_a: str, response_b: str) -> Preference:
        qa, qb = self.quality(prompt, response_a), self.quality(prompt, response_b)
        diff = qa - qb
        if abs(diff) <= self.tie_margin:
            return Preference("tie", 0.5, f"equal heuristic quality ({qa:.3f})")
        preferred = "a" if diff > 0 else "b"
        confidence = round(0.5 + min(0.5, abs(diff)), 6)
        return Preference(preferred, confidence, f"heuristic quality a={qa:.3f} b={qb:.3f}")

    def score_rubric(self, prompt: str, response: str, criteria: list[str]) -> dict[str, float]:
        _check_criteria(criteria)
        quality = self.quality(prompt, response)
        present = set(content_words(response))
        scores = {}
        for criterion in criteria:
            words = set(content_words(criterion))
            overlap = len(words & present) / len(words) if words else 0.0
            scores[criterion] = round(0.7 * quality + 0.3 * overlap, 4)
        return scores


def _check_criteria(criteria: list[str]) -> None:
    if isinstance(criteria, str) or not criteria:
        raise ConfigError("score_rubric(criteria=...): give a non-empty list of criterion strings")
    for criterion in criteria:
        if not isinstance(criterion, str) or not criterion.strip():
            raise ConfigError(f"score_rubric: every criterion must be a non-empty string, got {criterion!r}")
    if len(set(criteria)) != len(criteria):
        raise ConfigError("score_rubric: criteria must be distinct")


# --------------------------------------------------------------------------------------------------
# CachedJudge


class CachedJudge:
    """Wrap a judge with a disk cache shared safely by several processes.

    The key is SHA-256 over canonical JSON of ``{judge identity, method, inputs}``; each entry is one
    JSON file ``cache_dir/<key[:2]>/<key>.json`` written atomically (temp file, fsync, rename). Two
    processes computing the same key both write complete files and the last rename wins. A file that
    cannot be read or does not match its key counts as ``corrupt``, is treated as a miss and is
    rewritten. ``hits`` / ``misses`` / ``corrupt`` count this instance's lookups.

    Example:
        >>> import tempfile
        >>> judge = CachedJudge(inner=StubJudge(), cache_dir=tempfile.mkdtemp())
        >>> _ = judge.score_rubric("q", "an answer", ["clarity"]); _ = judge.score_rubric("q", "an answer", ["clarity"])
        >>> judge.hits, judge.misses
        (1, 1)
    """

    _FORMAT = 1

    def __init__(self, inner: LLMJudge, cache_dir: str | Path = ".judge_cache"):
        if not isinstance(inner, LLMJudge):
            raise ConfigError(
                f"CachedJudge(inner={type(inner).__name__}): needs a judge with score_pairwise and score_rubric"
            )
        self.inner = inner
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.hits = 0
        self.misses = 0
        self.corrupt = 0

    @property
    def identity(self) -> str:
        return judge_identity(self.inner)

    def stats(self) -> dict[str, int]:
        """This instance's counts: hits, misses, corrupt entries met."""
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt}

    def key(self, method: str, inputs: dict[str, Any]) -> str:
        """The cache key of ``method`` called with ``inputs`` on the wrapped judge."""
        return sha256_json({"format": self._FORMAT, "judge": self.identity, "method": method, "inputs": inputs})

    def _path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.json"

    def _lookup(self, key: str, method: str) -> Any | None:
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            self.corrupt += 1
            return None
        if not isinstance(entry, dict) or entry.get("key") != key or entry.get("method") != method or "result" not in entry:
            self.corrupt += 1
            return None
        return entry["result"]

    def _store(self, key: str, method: str, result: Any) -> None:
        entry = {"key": key, "judge": self.identity, "method": method, "result": result}
        atomic_write_text(self._path(key), json.dumps(entry, sort_keys=True, ensure_ascii=False))

    def _cached(self, method: str, inputs: dict[str, Any], compute: Callable[[], Any], decode: Callable[[Any], Any]) -> Any:
        key = self.key(method, inputs)
        raw = self._lookup(key, method)
        if raw is not None:
            try:
                value = decode(raw)
            except (ProvenirError, TypeError, ValueError, KeyError):
                self.corrupt += 1
            else:
                self.hits += 1
                return value
        self.misses += 1
        value, raw = compute()
        self._store(key, method, raw)
        return value

    def score_pairwise(self, prompt: str, response_a: str, response_b: str) -> Preference:
        def compute() -> tuple[Preference, dict[str, Any]]:
            pref = self.inner.score_pairwise(prompt, response_a, response_b)
            return pref, asdict(pref)

        def decode(raw: Any) -> Preference:
            return Preference(raw["preferred"], raw["confidence"], raw["rationale"])

        inputs = {"prompt": prompt, "response_a": response_a, "response_b": response_b}
        return self._cached("score_pairwise", inputs, compute, decode)

    def score_rubric(self, prompt: str, response: str, criteria: list[str]) -> dict[str, float]:
        def compute() -> tuple[dict[str, float], dict[str, float]]:
            scores = {k: float(v) for k, v in self.inner.score_rubric(prompt, response, list(criteria)).items()}
            return scores, scores

        def decode(raw: Any) -> dict[str, float]:
            if not isinstance(raw, dict) or set(raw) != set(criteria):
                raise ValueError("criteria mismatch")
            return {c: float(raw[c]) for c in criteria}

        inputs = {"prompt": prompt, "response": response, "criteria": list(criteria)}
        return self._cached("score_rubric", inputs, compute, decode)


# --------------------------------------------------------------------------------------------------
# API judges

PROMPT_VERSION = "v1"

_PAIRWISE_SYSTEM = (
    "You are an impartial judge comparing two responses to the same user prompt. Judge helpfulness, "
    "correctness, and faithfulness to the prompt; ignore response length and the order in which the "
    "responses are shown. Reply with ONLY one JSON object and nothing else, of the form "
    '{"preferred": "A" | "B" | "tie", "confidence": <number between 0 and 1>, "rationale": "<one or two sentences>"}.'
)

_RUBRIC_SYSTEM = (
    "You are an impartial judge scoring one response to a user prompt against each listed criterion. "
    "Score each criterion with a number between 0 (fails completely) and 1 (fully satisfies). Reply with "
    'ONLY one JSON object and nothing else, of the form {"scores": {"<criterion>": <number>, ...}, '
    '"rationale": "<one or two sentences>"}, using every criterion exactly as written as a key.'
)


def _pairwise_user(prompt: str, first: str, second: str) -> str:
    return (
        f"[User prompt]\n{prompt}\n\n[Response A]\n{first}\n[End of response A]\n\n"
        f"[Response B]\n{second}\n[End of response B]\n\nWhich response is better? Answer in JSON."
    )


def _rubric_user(prompt: str, response: str, criteria: list[str]) -> str:
    listed = "\n".join(f"- {c}" for c in criteria)
    return (
        f"[User prompt]\n{prompt}\n\n[Response]\n{response}\n[End of response]\n\n[Criteria]\n{listed}\n\n"
        "Score the response on each criterion. Answer in JSON."
    )


_FENCE = re.compile(r"^```[a-zA-Z0-9_-]*\s*|\s*```$")
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


def _first_object(text: str) -> str | None:
    """The first balanced ``{...}`` in ``text`` (strings and escapes respected), or None."""
    start = text.find("{")
    while start != -1:
        depth, in_string, escaped = 0, False, False
        for index in range(start, len(text)):
            ch = text[index]
            if in_string:
                if escaped:
                    escaped = False
                elif ch == "\\":
                    escaped = True
                elif ch == '"':
                    in_string = False
            elif ch == '"':
                in_string = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    return text[start : index + 1]
        start = text.find("{", start + 1)
    return None


def parse_json_object(text: str) -> dict[str, Any]:
    """Parse a model's reply as one JSON object, repairing the usual damage.

    Tried in order: the text as is; without Markdown code fences; the first balanced ``{...}`` in
    the text; that object without trailing commas and with typographic quotes straightened; and as a
    Python literal (single-quoted keys). Raises :class:`JudgeResponseError` when all fail.
    """
    candidates: list[str] = []
    stripped = text.strip()
    candidates.append(stripped)
    unfenced = _FENCE.sub("", stripped).strip()
    candidates.append(unfenced)
    obj = _first_object(unfenced)
    if obj is not None:
        candidates.append(obj)
        fixed = _TRAILING_COMMA.sub(r"\1", obj.replace("“", '"').replace("”", '"'))
        candidates.append(fixed)
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict):
            return value
    if obj is not None:
        try:
            value = ast.literal_eval(_TRAILING_COMMA.sub(r"\1", obj))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if isinstance(value, dict):
            return value
    snippet = text if len(text) <= 200 else text[:200] + "…"
    raise JudgeResponseError(f"judge reply is not a JSON object: {snippet!r}")


def _parse_pairwise(data: dict[str, Any]) -> tuple[str, float, str]:
    preferred = str(data.get("preferred", "")).strip().lower()
    preferred = {"response a": "a", "response b": "b", "draw": "tie", "equal": "tie"}.get(preferred, preferred)
    if preferred not in _PREFERENCES:
        raise JudgeResponseError(f'"preferred" must be "A", "B" or "tie", got {data.get("preferred")!r}')
    confidence = _unit_float(data.get("confidence"), "confidence")
    rationale = data.get("rationale", "")
    return preferred, confidence, rationale if isinstance(rationale, str) else json.dumps(rationale)


def _unit_float(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise JudgeResponseError(f'"{name}" must be a number between 0 and 1, got {value!r}')
    try:
        number = float(value)
    except ValueError as exc:
        raise JudgeResponseError(f'"{name}" must be a number between 0 and 1, got {value!r}') from exc
    if not 0.0 <= number <= 1.0:
        raise JudgeResponseError(f'"{name}" must be between 0 and 1, got {number}')
    return number


def _parse_rubric(data: dict[str, Any], criteria: list[str]) -> dict[str, float]:
    scores = data.get("scores")
    if not isinstance(scores, dict):
        raise JudgeResponseError('reply needs a "scores" object mapping each criterion to a number')
    missing = [c for c in criteria if c not in scores]
    if missing:
        raise JudgeResponseError(f'"scores" lacks criteria {missing}')
    return {c: _unit_float(scores[c], f"scores[{c!r}]") for c in criteria}


def combine_orders(first: tuple[str, float, str], second_swapped: tuple[str, float, str]) -> Preference:
    """Combine a judgement in order (A, B) with one in order (B, A) (its labels swapped back).

    Agreement keeps the verdict with the mean confidence; disagreement (including one tie) is a tie
    whose confidence is half the lower of the two, so it ranks below any consistent verdict.
    """
    (p1, c1, r1), (p2, c2, _r2) = first, second_swapped
    if p1 == p2:
        return Preference(p1, round((c1 + c2) / 2, 6), r1)
    rationale = f"position bias: order AB preferred {p1}, order BA preferred {p2}. {r1}".strip()
    return Preference("tie", round(min(c1, c2) / 2, 6), rationale)


_SWAP = {"a": "b", "b": "a", "tie": "tie"}


class _APIJudge:
    """Shared machinery of the API judges: prompts, JSON repair, retries, both-order pairwise."""

    vendor = "api"
    _env_key = ""
    _module_name = ""
    _extra = ""

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_base: float = 1.0,
        backoff_max: float = 30.0,
        temperature: float | None = None,
        max_tokens: int = 512,
        both_orders: bool = True,
        client: Any = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if not model:
            raise ConfigError(f"{type(self).__name__}(model=...): give a model name")
        if max_retries < 0 or timeout <= 0 or backoff_base < 0 or backoff_max < 0:
            raise ConfigError(
                f"{type(self).__name__}: max_retries, backoff_base and backoff_max must be >= 0 and timeout > 0"
            )
        self.model = model
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.backoff_base = float(backoff_base)
        self.backoff_max = float(backoff_max)
        self.temperature = None if temperature is None else float(temperature)
        self.max_tokens = int(max_tokens)
        self.both_orders = both_orders
        self._client = client
        self._sleep = sleep
        self._rng = random.Random()
        self.calls = 0
        self.retries = 0

    @property
    def identity(self) -> str:
        where = f"@{self.base_url}" if self.base_url else ""
        return (
            f"{self.vendor}:{self.model}{where}:prompt={PROMPT_VERSION}:t={self.temperature}"
            f":max_tokens={self.max_tokens}:both_orders={self.both_orders}"
        )

    @property
    def _module(self) -> Any:
        from provenir.core.errors import require

        return require(self._module_name, feature=type(self).__name__, extra=self._extra)

    def _resolve_key(self) -> str | None:
        key = self.api_key or os.environ.get(self._env_key)
        if not key and self.base_url is None:
            raise ConfigError(
                f"{type(self).__name__} needs an API key: set {self._env_key} or pass api_key=..."
            )
        return key

    def _complete(self, system: str, user: str) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def _retry_delay(self, attempt: int, exc: BaseException) -> float:
        delay = min(self.backoff_max, self.backoff_base * (2**attempt))
        delay = delay / 2 + self._rng.uniform(0, delay / 2)
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None:
            retry_after = headers.get("retry-after")
            try:
                if retry_after is not None:
                    delay = max(delay, min(self.backoff_max, float(retry_after)))
            except ValueError:
                pass
        return delay

    def _classify(self, exc: BaseException) -> str:
        module = self._module
        if isinstance(exc, (module.AuthenticationError, module.PermissionDeniedError)):
            return "auth"
        if isinstance(exc, module.APIConnectionError):  # includes APITimeoutError
            return "retry"
        if isinstance(exc, module.APIStatusError):
            code = exc.status_code
            return "retry" if code in (408, 409, 429) or code >= 500 else "fatal"
        return "other"

    def _call(self, system: str, user: str) -> str:
        last: BaseException | None = None
        for attempt in range(self.max_retries + 1):
            self.calls += 1
            try:
                return self._complete(system, user)
            except Exception as exc:  # noqa: BLE001 - classified below, re-raised when not ours
                kind = self._classify(exc)
                if kind == "auth":
                    raise JudgeAuthError(
                        f"{type(self).__name__}: the API refused the credentials "
                        f"({getattr(exc, 'status_code', '?')}); check {self._env_key} or api_key="
                    ) from exc
                if kind == "fatal":
                    raise JudgeError(
                        f"{type(self).__name__}: request rejected with HTTP {getattr(exc, 'status_code', '?')}: {exc}"
                    ) from exc
                if kind == "other":
                    raise
                last = exc
                if attempt < self.max_retries:
                    self.retries += 1
                    self._sleep(self._retry_delay(attempt, exc))
        status = getattr(last, "status_code", None)
        reason = f"HTTP {status}" if status else type(last).__name__
        raise JudgeUnavailableError(
            f"{type(self).__name__}({self.model}): still failing after {self.max_retries + 1} attempts ({reason})"
        ) from last

    def _ask_json(self, system: str, user: str, parse: Callable[[dict[str, Any]], Any]) -> Any:
        reply = self._call(system, user)
        try:
            return parse(parse_json_object(reply))
        except JudgeResponseError as first_error:
            repair = (
                f"{user}\n\nYour previous reply could not be used: {first_error}. "
                "Reply again with ONLY the JSON object described, nothing before or after it."
            )
            reply = self._call(system, repair)
            try:
                return parse(parse_json_object(reply))
            except JudgeResponseError as exc:
                raise JudgeResponseError(
                    f"{type(self).__name__}({self.model}): invalid reply after one repair request: {exc}"
                ) from exc

    def score_pairwise(self, prompt: str, response_a: str, response_b: str) -> Preference:
        first = self._ask_json(_PAIRWISE_SYSTEM, _pairwise_user(prompt, response_a, response_b), _parse_pairwise)
        if not self.both_orders:
            return Preference(*first)
        p2, c2, r2 = self._ask_json(_PAIRWISE_SYSTEM, _pairwise_user(prompt, response_b, response_a), _parse_pairwise)
        return combine_orders(first, (_SWAP[p2], c2, r2))

    def score_rubric(self, prompt: str, response: str, criteria: list[str]) -> dict[str, float]:
        _check_criteria(criteria)
        criteria = list(criteria)
        return self._ask_json(
            _RUBRIC_SYSTEM, _rubric_user(prompt, response, criteria), lambda data: _parse_rubric(data, criteria)
        )


class AnthropicJudge(_APIJudge):
    """A judge on Anthropic's Messages API (``anthropic`` client; ``pip install 'provenir[judge-anthropic]'``).

    Args:
        model: e.g. ``"claude-haiku-4-5-20251001"``.
        api_key: defaults to ``ANTHROPIC_API_KEY``.
        base_url: another endpoint (a proxy, or a test server).
        temperature: sent only when given (current Messages API versions take none).
        timeout: seconds per request; max_retries: retries after the first attempt (429/5xx/time-out);
        backoff_base / backoff_max: exponential back-off in seconds; both_orders: position-bias control.
    """

    vendor = "anthropic"
    _env_key = "ANTHROPIC_API_KEY"
    _module_name = "anthropic"
    _extra = "judge-anthropic"

    def _get_client(self) -> Any:
        if self._client is None:
            # A proxy or test server at base_url may need no key; the client insists on one.
            key = self._resolve_key() or "not-needed"
            kwargs: dict[str, Any] = {"api_key": key, "timeout": self.timeout, "max_retries": 0}
            if self.base_url:
                kwargs["base_url"] = self.base_url
            self._client = self._module.Anthropic(**kwargs)
        return self._client

    def _complete(self, system: str, user: str) -> str:
        # Current Messages API versions take no sampling parameters; an explicit temperature is
        # passed through for endpoints (proxies, older versions) that still accept one.
        extra = {"extra_body": {"temperature": self.temperature}} if self.temperature is not None else {}
        message = self._get_client().messages.create(
            model=self.model,
            max_tokens=self.max_tokens,
            system=system,
            messages=[{"role": "user", "content": user}],
            **extra,
        )
        return "".join(getattr(block, "text", "") for block in message.content if getattr(block, "type", "") == "text")


class OpenAIJudge(_APIJudge):
    """A judge on the OpenAI Chat Completions API (``openai`` client; ``pip install 'provenir[judge-openai]'``).

    ``base_url`` points it at any OpenAI-compatible server (vLLM: ``http://host:8000/v1``, llama.cpp's
    ``llama-server``: ``http://host:8080/v1``); there the API key may be omitted. ``json_mode=True``
    (default) sends ``response_format={"type": "json_object"}``; turn it off for servers without it.
    Other arguments as for :class:`AnthropicJudge`; the key defaults to ``OPENAI_API_KEY``.
    """

    vendor = "openai"
    _env_key = "OPENAI_API_KEY"
    _module_name = "openai"
    _extra = "judge-openai"

    def __init__(self, model: str, *, json_mode: bool = True, temperature: float | None = 0.0, **kwargs: Any):
        super().__init__(model, temperature=temperature, **kwargs)
        self.json_mode = json_mode

    @property
    def identity(self) -> str:
        return f"{super().identity}:json_mode={self.json_mode}"

    def _get_client(self) -> Any:
        if self._client is None:
            key = self._resolve_key() or "not-needed"
            kwargs: dict[str, Any] = {"api_key": key, "timeout": self.timeout, "max_retries": 0}
            if self.base_url:
                kwargs["base_url"] = self.base_url
            self._client = self._module.OpenAI(**kwargs)
        return self._client

    def _complete(self, system: str, user: str) -> str:
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if self.json_mode else {}
        completion = self._get_client().chat.completions.create(
            model=self.model,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
            max_tokens=self.max_tokens,
            **({"temperature": self.temperature} if self.temperature is not None else {}),
            **extra,
        )
        if not completion.choices:
            raise JudgeResponseError(f"OpenAIJudge({self.model}): the reply has no choices")
        return completion.choices[0].message.content or ""
