"""Secret scanning: every vendor type, placeholders, no values in reports, contexts and references."""

from __future__ import annotations

import json

import pytest

from provenir.core.errors import ConfigError
from provenir.data.dataset import JsonlDataset
from provenir.governance.scanners import SECRET_TYPES, SecretScanner, SecretScanResult

LIVE = {
    "AWS_ACCESS_KEY_ID": "key AKIAZ3MSJ2KQ7XYPLW4R",
    "AWS_SECRET_ACCESS_KEY": "aws_secret_access_key = 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",
    "GITHUB_TOKEN": "ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "GITHUB_FINE_GRAINED_TOKEN": "github_pat_11ABCDEFG0abcdefghijkl_" + "Ab1" * 19 + "Z9",
    "SLACK_TOKEN": "xoxb-730194628351-4820917365028-AbCdEfGhIjKlMnOpQrStUvWx",
    "SLACK_WEBHOOK": "https://hooks.slack.com/services/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",
    "STRIPE_KEY": "sk_live_51HqLyjWDarjtT1zdp7dcAbCdEf",
    "GOOGLE_API_KEY": "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
    "OPENAI_API_KEY": "sk-proj-Ab3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5zA7bC9dT3BlbkFJ",
    "ANTHROPIC_API_KEY": "sk-ant-api03-" + "aB3-dE5_fG7hI9jK1lM3" * 4 + "AA",
    "JWT": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiIsInNjb3BlIjoiYWRtaW4ifQ.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNA",
    "PRIVATE_KEY": "-----BEGIN RSA PRIVATE KEY-----\n" + "MIIEowIBAAKCAQEAx7Q2" * 5 + "\n-----END RSA PRIVATE KEY-----",
    "URL_CREDENTIALS": "redis://app:Zq9xW2vB7n@cache.prod:6379/0",
    "PASSWORD_ASSIGNMENT": "DB_PASSWORD=Tr0ub4dor&3",
    "HIGH_ENTROPY_SECRET": "client_secret: 8fJ2kL9qW3eR7tY1uI5oP0aS",
}


@pytest.mark.parametrize("kind", sorted(LIVE))
def test_each_live_type_is_found(kind):
    result = SecretScanner().scan(JsonlDataset([{"text": LIVE[kind]}]))
    assert result.secret_types == [kind], [(f.entity_type, f.placeholder) for f in result.findings]
    assert result.has_secrets and result.records_with_secrets == 1


def test_all_types_covered():
    assert set(LIVE) == set(SECRET_TYPES)


@pytest.mark.parametrize("text,kind", [
    ("aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY"),
    ("stripe.api_key = 'sk_test_4eC39HqLyjWDarjtT1zdp7dc'", "STRIPE_KEY"),
    ("token eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
     "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", "JWT"),
    ("GITHUB_TOKEN=ghp_" + "x" * 36, "GITHUB_TOKEN"),
    ("password = 'changeme'", "PASSWORD_ASSIGNMENT"),
])
def test_vendor_examples_are_placeholders(text, kind):
    result = SecretScanner().scan(JsonlDataset([{"text": text}]))
    assert not result.has_secrets and result.secret_types == []
    assert result.placeholder_count == 1
    assert result.findings[0].entity_type == kind and result.findings[0].placeholder


@pytest.mark.parametrize("text", [
    "password=os.environ['DB_PASSWORD']", "api_key = \"${API_KEY}\"", "token: {{ secrets.TOKEN }}",
    "password=<PASSWORD>", "Password: required.", "max_tokens=256 token_limit=4096 retries=3",
    "payload=VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==",
    "api_key=" + "VGhlIHF1aWNrIGJyb3duIGZveCBqdW1wcyBvdmVyIHRoZSBsYXp5IGRvZw==",
    "Install sk-learn; AKIA is the prefix of AWS key ids", "commit 3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39",
    "password = db_password", "eyJub3QiOiJhIGp3dCJ9 is base64 json only",
])
def test_references_prose_and_lookalikes_are_clean(text):
    result = SecretScanner().scan(JsonlDataset([{"text": text}]))
    assert result.findings == [], [(f.entity_type, f.preview) for f in result.findings]


def test_reports_never_contain_values():
    records = [{"messages": [{"role": "user", "content": v}]} for v in LIVE.values()]
    result = SecretScanner().scan(JsonlDataset(records))
    dumped = json.dumps(result.to_dict())
    for value in LIVE.values():
        for token in value.split():
            if len(token) >= 12:
                assert token not in dumped
    finding = result.findings[0]
    assert finding.preview.endswith("chars)") and "*" in finding.preview
    assert len(finding.value_hash) == 64
    assert finding.field == "messages[0].content"


def test_result_contract():
    result = SecretScanner().scan(JsonlDataset([{"a": "nothing here"}]))
    assert isinstance(result, SecretScanResult)
    assert (result.has_secrets, result.secret_types, result.record_count) == (False, [], 1)
    with pytest.raises(ConfigError):
        SecretScanner(secret_types=["PASSWORD"])
    only = SecretScanner(secret_types=["JWT"]).scan(JsonlDataset([{"t": LIVE["GITHUB_TOKEN"] + " " + LIVE["JWT"]}]))
    assert only.secret_types == ["JWT"]
