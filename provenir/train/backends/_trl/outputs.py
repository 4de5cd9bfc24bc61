"""What a ``trl`` run writes into its run folder: the adapter, and the checkpoints ``--resume`` reads."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from provenir.core.io import atomic_write_text

ADAPTER_DIR = "adapter"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "train_metrics.json"
#: checkpoints kept while a run trains (older ones are deleted); the latest is what --resume uses,
#: the one before it is kept in case the run was stopped while the latest was being written
CHECKPOINTS_KEPT = 2
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def latest_checkpoint(output_dir: str | Path) -> str | None:
    """The highest-numbered complete ``checkpoint-N`` folder in ``output_dir``, or ``None``."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = _CHECKPOINT.match(child.name)
        if match and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(match.group(1)), child))
    return str(max(found)[1]) if found else None


def latest_checkpoint_step(checkpoints: Path) -> int | None:
    """The step of the latest complete checkpoint under a run's ``checkpoints/`` (in process:
    ``hf/checkpoint-N``; on Ray: ``ray/checkpoint-00000N``), or ``None``."""
    found = [latest_checkpoint(checkpoints / sub) for sub in ("hf", "ray")]
    steps = [step for step in (checkpoint_step(c) for c in found if c) if step is not None]
    return max(steps) if steps else None


def checkpoint_step(checkpoint: str) -> int | None:
    """The optimizer step a checkpoint folder holds: its ``trainer_state.json``'s ``global_step``,
    else the number in its name (HF's ``checkpoint-4``, Ray's ``checkpoint-000004``)."""
    folder = Path(checkpoint)
    try:
        return int(json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        match = _CHECKPOINT.match(folder.name)
        return int(match.group(1)) if match else None


def save_adapter(model: Any, tokenizer: Any, adapter_dir: Path) -> None:
    """Write the adapter (or full model) as safetensors plus the tokenizer, atomically per file."""
    staging = adapter_dir.with_name(f".{adapter_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    normalise_adapter_config(staging)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    staging.rename(adapter_dir)


def normalise_adapter_config(adapter_dir: Path) -> None:
    """Sort list/set-valued fields PEFT writes in set order (``target_modules`` for all-linear), so
    the files do not depend on ``PYTHONHASHSEED``: in ``adapter_config.json`` and in the one of
    every further adapter PEFT saves in a subfolder (DPO's ``ref/``)."""
    for path in sorted(adapter_dir.glob("**/adapter_config.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for key in ("target_modules", "modules_to_save", "layers_to_transform"):
            if isinstance(data.get(key), list):
                data[key] = sorted(data[key], key=str)
        atomic_write_text(path, json.dumps(data, sort_keys=True, indent=2) + "\n")


def adapter_from_checkpoint(checkpoint: Path, adapter_dir: Path, loop_config: dict[str, Any]) -> None:
    adapter_dir.mkdir(parents=True, exist_ok=True)
    for name in ("adapter_model.safetensors", "adapter_config.json", "model.safetensors", "config.json"):
        if (checkpoint / name).is_file():
            shutil.copy2(checkpoint / name, adapter_dir / name)
    normalise_adapter_config(adapter_dir)


__all__ = [
    "ADAPTER_DIR", "CHECKPOINTS_KEPT", "CHECKPOINT_DIR", "METRICS_FILE", "adapter_from_checkpoint",
    "checkpoint_step", "latest_checkpoint", "latest_checkpoint_step", "normalise_adapter_config", "save_adapter",
]
