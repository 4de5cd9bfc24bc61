"""Secret scanning: cloud and vendor keys, tokens, private keys, credentials in URLs, passwords.

Detected (54 types, see :data:`SECRET_TYPES` and docs/governance.md, "Secret types"): cloud keys
(AWS, GCP, Azure), source-hosting and CI tokens (GitHub with its CRC32 checksum, GitLab, Bitbucket,
Atlassian), chat and payment tokens and webhooks (Slack, Discord, Telegram, Stripe, Square, Braintree,
Shopify), mail and messaging (Twilio, SendGrid, Mailgun, Mailchimp), package registries (npm, PyPI,
RubyGems, Docker Hub), AI providers (Hugging Face, OpenAI, Anthropic, Cohere, Groq, Replicate),
observability and SaaS keys (Databricks, Datadog, New Relic, Sentry, Okta, Linear, Notion, Heroku,
DigitalOcean, Cloudflare, Vault, Doppler), JWTs, private keys of every PEM kind, credentials in URLs,
Kubernetes ``Secret`` data, password assignments (code, ``.env``, YAML, JSON, ``.netrc``, ``.pypirc``,
``.npmrc``), and high-entropy values in secret-like contexts (``api_key=…``, ``Authorization: Bearer
…``). Provider tokens without a prefix of their own count under a key that names the provider
(``DD_API_KEY=…``). detect-secrets' own checks are used where they serve (JWT structure,
sequential/templated/UUID heuristics); the candidates come from one RE2 pass.

Documented example keys (AWS's ``AKIAIOSFODNN7EXAMPLE``, Stripe's docs key, jwt.io's token, values
with ``EXAMPLE``/``xxxx``/``your_key``) are reported with ``placeholder=True`` and do not count as
live secrets. Reports never hold a secret's value: a masked preview and a SHA-256 only.

Example:
    >>> from provenir.data.dataset import JsonlDataset
    >>> ds = JsonlDataset.from_records([{"text": "aws_access_key_id = AKIAIOSFODNN7EXAMPLE"}])
    >>> result = SecretScanner().scan(ds)
    >>> result.has_secrets, result.placeholder_count, result.findings[0].preview
    (False, 1, 'AKIA******** (20 chars)')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from provenir.data.dataset import JsonlDataset
from provenir.governance._batch import Finding, RecordError, findings_of, scan_batch, summarize
from provenir.governance._engine import SECRET_TYPES, Engine
from provenir.governance.pii import BATCH_SIZE, _check_types, _records

__all__ = ["SECRET_TYPES", "SecretFinding", "SecretScanResult", "SecretScanner"]

SecretFinding = Finding


@dataclass
class SecretScanResult:
    """What a secret scan found.

    Attributes:
        has_secrets: at least one live secret (placeholders do not count).
        secret_types: sorted types of the live secrets found.
        record_count: records scanned.
        findings: every detection, live and placeholder (``finding.placeholder``), without values.
        counts: live findings per type.
        placeholder_count: documented example keys and stand-ins found.
        records_with_secrets: records holding at least one live secret.
        errors: records that could not be scanned whole.
    """

    has_secrets: bool
    secret_types: list[str]
    record_count: int = 0
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    placeholder_count: int = 0
    records_with_secrets: int = 0
    errors: list[RecordError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "has_secrets": self.has_secrets, "secret_types": self.secret_types,
            "record_count": self.record_count, "counts": self.counts,
            "placeholder_count": self.placeholder_count,
            "records_with_secrets": self.records_with_secrets,
            "findings": [f.to_dict() for f in self.findings],
            "errors": [e.to_dict() for e in self.errors],
        }


class SecretScanner:
    """Finds secrets in every string of every record.

    Args:
        secret_types: types to look for (default: all of :data:`SECRET_TYPES`).
        batch_size: records per engine batch.
    """

    def __init__(self, secret_types: Sequence[str] | None = None, *, batch_size: int = BATCH_SIZE):
        self.secret_types = _check_types(secret_types, SECRET_TYPES, "SecretScanner(secret_types=...)")
        self.engine = Engine(pii_types=(), secret_types=self.secret_types)
        self.batch_size = batch_size

    def scan(self, dataset: JsonlDataset) -> SecretScanResult:
        """Scan a dataset (a :class:`JsonlDataset` or any iterable of dicts)."""
        records = _records(dataset)
        findings: list[Finding] = []
        errors: list[RecordError] = []
        live_records = 0
        for offset in range(0, len(records), self.batch_size):
            batch = records[offset:offset + self.batch_size]
            for index, scan in enumerate(scan_batch(batch, self.engine), start=offset):
                if scan.problem:
                    errors.append(RecordError(index, f"record {index}: {scan.problem}"))
                if scan.hits:
                    found = findings_of(scan, index)
                    live_records += any(not f.placeholder for f in found)
                    findings.extend(found)
        counts = summarize(findings)
        return SecretScanResult(
            has_secrets=bool(counts["secret"]), secret_types=sorted(counts["secret"]),
            record_count=len(records), findings=findings, counts=dict(sorted(counts["secret"].items())),
            placeholder_count=sum(counts["placeholder"].values()), records_with_secrets=live_records,
            errors=errors,
        )
