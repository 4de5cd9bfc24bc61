"""provenir.adapters: merge LoRA adapters with provenance, and push/pull them to a model hub.

Submodules are imported lazily: ``provenir.adapters.merging`` needs torch/PEFT
(``pip install 'provenir[merge]'``) only when a merge runs, ``provenir.adapters.hub`` needs
``huggingface_hub`` (``pip install 'provenir[hub]'``) only when it talks to a hub.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HubClient",
    "HubConfig",
    "HubPushResult",
    "MergeConfig",
    "MergeResult",
    "ModelMerger",
]

_LAZY = {
    "MergeConfig": "provenir.adapters.merging",
    "MergeResult": "provenir.adapters.merging",
    "ModelMerger": "provenir.adapters.merging",
    "HubClient": "provenir.adapters.hub",
    "HubConfig": "provenir.adapters.hub",
    "HubPushResult": "provenir.adapters.hub",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'provenir.adapters' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
