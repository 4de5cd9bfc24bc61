"""AnthropicJudge and OpenAIJudge through the real client libraries against a loopback server.

The server speaks each vendor's wire format; the script drives 429s, 5xx, malformed JSON,
time-outs and authentication failures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from eval_support.vendor_server import Delay, Error, Raw, Reply, VendorServer  # noqa: E402

from provenir.core.errors import ConfigError  # noqa: E402
from provenir.eval.judge import (  # noqa: E402
    AnthropicJudge,
    CachedJudge,
    JudgeAuthError,
    JudgeError,
    JudgeResponseError,
    JudgeUnavailableError,
    LLMJudge,
    OpenAIJudge,
)

pytestmark = pytest.mark.timeout(60)

VENDORS = ["anthropic", "openai"]


def make_judge(vendor, server, **kwargs):
    sleeps = []
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("sleep", sleeps.append)
    cls = AnthropicJudge if vendor == "anthropic" else OpenAIJudge
    judge = cls(model="judge-model", api_key="sk-test", base_url=server.base_url, **kwargs)
    judge.sleeps = sleeps
    return judge


def pref(preferred, confidence=0.9, rationale="because"):
    return Reply(json.dumps({"preferred": preferred, "confidence": confidence, "rationale": rationale}))


@pytest.mark.parametrize("vendor", VENDORS)
def test_pairwise_both_orders_agree(vendor):
    # Order AB says A; order BA says B (i.e. the same response): a consistent verdict for "a".
    with VendorServer(vendor, [pref("A", 0.9), pref("B", 0.7)]) as server:
        judge = make_judge(vendor, server)
        assert isinstance(judge, LLMJudge)
        result = judge.score_pairwise("What is 2+2?", "4", "5")
    assert result.preferred == "a" and result.confidence == pytest.approx(0.8)
    assert len(server.requests) == 2
    first, second = (r["json"] for r in server.requests)
    assert first["model"] == "judge-model"
    if vendor == "anthropic":
        assert "JSON" in first["system"]
        user_1, user_2 = first["messages"][0]["content"], second["messages"][0]["content"]
        headers = server.requests[0]["headers"]
        assert headers.get("x-api-key") == "sk-test" or headers.get("authorization") == "Bearer sk-test"
        assert "anthropic-version" in {k.lower() for k in headers}
    else:
        assert first["messages"][0]["role"] == "system" and first["temperature"] == 0.0
        assert first["response_format"] == {"type": "json_object"}
        user_1, user_2 = first["messages"][1]["content"], second["messages"][1]["content"]
        assert server.requests[0]["headers"].get("authorization") == "Bearer sk-test"
    # the second request shows the responses in the opposite order
    assert user_1.index("[Response A]\n4") < user_1.index("[Response B]\n5")
    assert "[Response A]\n5" in user_2 and "[Response B]\n4" in user_2


@pytest.mark.parametrize("vendor", VENDORS)
def test_position_bias_disagreement_is_a_low_confidence_tie(vendor):
    # The judge always prefers whatever is shown first: position bias.
    with VendorServer(vendor, [pref("A", 0.9), pref("A", 0.8)]) as server:
        result = make_judge(vendor, server).score_pairwise("q", "x", "y")
    assert result.preferred == "tie"
    assert result.confidence == pytest.approx(0.4)
    assert "position bias" in result.rationale


@pytest.mark.parametrize("vendor", VENDORS)
def test_retries_429_and_5xx_with_backoff(vendor):
    overloaded = 529 if vendor == "anthropic" else 503
    script = [Error(429, {"retry-after": "0.5"}), Error(500), Error(overloaded), pref("tie", 0.5)]
    with VendorServer(vendor, script) as server:
        judge = make_judge(vendor, server, both_orders=False, backoff_base=0.1, backoff_max=5.0)
        result = judge.score_pairwise("q", "x", "y")
    assert result.preferred == "tie"
    assert len(server.requests) == 4 and judge.retries == 3
    # exponential back-off with jitter in [d/2, d], d = 0.1 * 2**attempt; Retry-After raises the first
    first, second, third = judge.sleeps
    assert first >= 0.5
    assert 0.1 <= second <= 0.2 and 0.2 <= third <= 0.4


@pytest.mark.parametrize("vendor", VENDORS)
def test_gives_up_after_max_retries(vendor):
    with VendorServer(vendor, [Error(500)] * 3) as server:
        judge = make_judge(vendor, server, both_orders=False, max_retries=2, backoff_base=0.0)
        with pytest.raises(JudgeUnavailableError, match="after 3 attempts \\(HTTP 500\\)"):
            judge.score_pairwise("q", "x", "y")
    assert len(server.requests) == 3


@pytest.mark.parametrize("vendor", VENDORS)
def test_timeout_is_retried(vendor):
    with VendorServer(vendor, [Delay(1.5, pref("A")), pref("A", 0.6)]) as server:
        judge = make_judge(vendor, server, both_orders=False, timeout=0.4, backoff_base=0.0)
        result = judge.score_pairwise("q", "x", "y")
    assert result.preferred == "a" and result.confidence == 0.6
    assert judge.retries == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_authentication_failure_is_immediate_and_clear(vendor):
    env = "ANTHROPIC_API_KEY" if vendor == "anthropic" else "OPENAI_API_KEY"
    with VendorServer(vendor, [Error(401), pref("A")]) as server:
        judge = make_judge(vendor, server)
        with pytest.raises(JudgeAuthError, match=env):
            judge.score_pairwise("q", "x", "y")
    assert len(server.requests) == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_client_error_is_not_retried(vendor):
    with VendorServer(vendor, [Error(400)]) as server:
        with pytest.raises(JudgeError, match="HTTP 400"):
            make_judge(vendor, server).score_rubric("q", "x", ["c"])
    assert len(server.requests) == 1


@pytest.mark.parametrize("vendor", VENDORS)
def test_malformed_json_is_repaired_locally_or_re_asked(vendor):
    fenced = Reply('```json\n{"preferred": "B", "confidence": 0.7, "rationale": "r",}\n```')
    prose = Reply('I pick A. {"preferred": "A", "confidence": 0.7, "rationale": "r"}')
    with VendorServer(vendor, [fenced, prose]) as server:
        result = make_judge(vendor, server).score_pairwise("q", "x", "y")
    # order AB says B, order BA says A (= B in the original order): consistent "b"
    assert result.preferred == "b" and len(server.requests) == 2

    with VendorServer(vendor, [Reply("I think A is better."), pref("A", 0.8)]) as server:
        judge = make_judge(vendor, server, both_orders=False)
        assert judge.score_pairwise("q", "x", "y").preferred == "a"
    assert len(server.requests) == 2
    repair_request = server.requests[1]["json"]
    text = json.dumps(repair_request)
    assert "could not be used" in text and "not a JSON object" in text

    with VendorServer(vendor, [Reply("nope"), Reply('{"preferred": "maybe"}')]) as server:
        with pytest.raises(JudgeResponseError, match="after one repair request"):
            make_judge(vendor, server, both_orders=False).score_pairwise("q", "x", "y")


@pytest.mark.parametrize("vendor", VENDORS)
def test_broken_http_body_is_retried(vendor):
    with VendorServer(vendor, [Raw(500, b"{not json"), pref("A")]) as server:
        judge = make_judge(vendor, server, both_orders=False, backoff_base=0.0)
        assert judge.score_pairwise("q", "x", "y").preferred == "a"


@pytest.mark.parametrize("vendor", VENDORS)
def test_rubric(vendor):
    reply = Reply(json.dumps({"scores": {"correct": 1, "concise": 0.25, "extra": 3}, "rationale": "ok"}))
    with VendorServer(vendor, [reply]) as server:
        scores = make_judge(vendor, server).score_rubric("q", "r", ["correct", "concise"])
    assert scores == {"correct": 1.0, "concise": 0.25}
    out_of_range = Reply(json.dumps({"scores": {"correct": 7}}))
    with VendorServer(vendor, [out_of_range, reply]) as server:
        assert make_judge(vendor, server).score_rubric("q", "r", ["correct"]) == {"correct": 1.0}
    assert "between 0 and 1" in json.dumps(server.requests[1]["json"])


def test_cached_api_judge_makes_no_second_call(tmp_path):
    with VendorServer("openai", [pref("A"), pref("B")]) as server:
        judge = CachedJudge(inner=make_judge("openai", server), cache_dir=tmp_path)
        first = judge.score_pairwise("q", "x", "y")
        assert judge.score_pairwise("q", "x", "y") == first
    assert len(server.requests) == 2 and judge.stats()["hits"] == 1
    assert "openai:judge-model@" in judge.identity


def test_missing_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        AnthropicJudge(model="claude-haiku-4-5-20251001").score_pairwise("q", "a", "b")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIJudge(model="gpt-x").score_rubric("q", "a", ["c"])


def test_openai_compatible_server_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with VendorServer("openai", [pref("A"), pref("B")]) as server:
        judge = OpenAIJudge(model="local-llama", base_url=server.base_url, json_mode=False, sleep=lambda s: None)
        assert judge.score_pairwise("q", "x", "y").preferred == "a"
    assert "response_format" not in server.requests[0]["json"]


def test_anthropic_proxy_at_base_url_needs_no_key(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    with VendorServer("anthropic", [pref("A"), pref("B")]) as server:
        judge = AnthropicJudge(model="claude-proxy", base_url=server.base_url, sleep=lambda s: None)
        assert judge.score_pairwise("q", "x", "y").preferred == "a"
    assert len(server.requests) == 2


def test_openai_identity_separates_json_mode():
    """Cache keys differ between JSON mode on and off: the two prompts can answer differently."""
    on, off = OpenAIJudge(model="m", api_key="k"), OpenAIJudge(model="m", api_key="k", json_mode=False)
    assert on.identity != off.identity
