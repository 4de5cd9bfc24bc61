"""provenir.governance: PII scanning and masking, secret scanning, the tamper-evident audit log.

Submodules are the API: :mod:`provenir.governance.pii` (``PIIScanner``, ``PIIMasker``,
``PIIScanResult``), :mod:`provenir.governance.scanners` (``SecretScanner``, ``SecretScanResult``) and
:mod:`provenir.governance.audit` (``AuditLogger``). Importing this package stays cheap: the names
below load their module on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AuditLogger", "AuditVerification", "PIIMasker", "PIIScanResult", "PIIScanner",
    "ScanReport", "SecretScanResult", "SecretScanner", "default_audit_dir", "scan_files",
]

_WHERE = {
    "AuditLogger": "audit", "AuditVerification": "audit", "default_audit_dir": "audit",
    "PIIMasker": "pii", "PIIScanResult": "pii", "PIIScanner": "pii",
    "SecretScanResult": "scanners", "SecretScanner": "scanners",
    "ScanReport": "_files", "scan_files": "_files",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        attr = "scan_files_local" if name == "scan_files" else name
        return getattr(importlib.import_module(f"provenir.governance.{_WHERE[name]}"), attr)
    raise AttributeError(f"module 'provenir.governance' has no attribute {name!r}")
