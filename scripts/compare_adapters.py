"""Train the tiny model with the ``trl`` backend (SFT and DPO, fixed seeds, in process) and record
the sha256 of every file each run writes under ``adapter/``: the evidence that a change to the
backend leaves adapters bit-identical.

Run it once per tree with the same interpreter, the tree first on ``PYTHONPATH``, over the same
tiny model folder (built here when missing)::

    PYTHONPATH=/old/tree python scripts/compare_adapters.py --model /tmp/tiny --out old.json
    PYTHONPATH=.          python scripts/compare_adapters.py --model /tmp/tiny --out new.json --against old.json

It prints which ``provenir`` was imported and a table of the hashes; with ``--against`` it exits 1
when any file's hash differs from (or is missing in) the other record.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RECORDS = [{"instruction": f"Reverse {i:03d}", "output": f"{i:03d}"[::-1]} for i in range(0, 999, 37)]
PAIRS = [{"prompt": f"Reverse {i:03d}", "chosen": f"{i:03d}"[::-1], "rejected": f"{i:03d}"} for i in range(0, 999, 83)]


def train_and_hash(model: Path, store_root: Path) -> dict[str, dict[str, str]]:
    """``{"sft": {file: sha256}, "dpo": {...}}`` for one SFT and one DPO run on ``model``."""
    from provenir.core.config import DataConfig, PEFTConfig, RunConfig, TrainingConfig
    from provenir.core.hashing import sha256_file
    from provenir.core.store import ArtifactStore
    from provenir.data.dataset import JsonlDataset
    from provenir.train.backends import get_backend

    def config(seed: int, peft: PEFTConfig, training: TrainingConfig) -> RunConfig:
        return RunConfig(name="compare-adapters", backend="trl", seed=seed, model_name_or_path=str(model),
                         max_steps=4, batch_size=4, data=DataConfig(template="chatml"), peft=peft,
                         training=training)

    backend, store = get_backend("trl"), ArtifactStore(store_root)
    sft = backend.train_sft(
        config(1, PEFTConfig(rank=4, alpha=8, dropout=0.1, target_modules=["all-linear"]),
               TrainingConfig(learning_rate=5e-3, logging_steps=2)),
        JsonlDataset.from_records(RECORDS), store=store,
    )
    dpo = backend.train_dpo(
        config(5, PEFTConfig(rank=4, alpha=8, dropout=0.0, use_rslora=True, target_modules=["q_proj", "v_proj"]),
               TrainingConfig(method="dpo", learning_rate=5e-3, dpo_beta=0.2, logging_steps=1)),
        JsonlDataset.from_records(PAIRS), store=store,
    )
    return {
        name: {str(p.relative_to(result.adapter_path)): sha256_file(p)
               for p in sorted(Path(result.adapter_path).rglob("*")) if p.is_file()}
        for name, result in (("sft", sft), ("dpo", dpo))
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="tiny model folder (built when missing)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the hashes (JSON)")
    parser.add_argument("--against", type=Path, help="hashes from another tree to compare with")
    parser.add_argument("--store", type=Path, help="keep the runs in this store (default: a temporary one)")
    args = parser.parse_args(argv)

    import provenir
    from provenir.train.tiny import build_tiny_model

    print(f"provenir imported from {Path(provenir.__file__).parent}")
    build_tiny_model(args.model, seed=0)
    if args.store is not None:
        hashes = train_and_hash(args.model, args.store)
    else:
        with tempfile.TemporaryDirectory(prefix="compare-adapters-") as work:
            hashes = train_and_hash(args.model, Path(work))
    record = {"provenir": str(Path(provenir.__file__).parent), "adapters": hashes}
    args.out.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    other = json.loads(args.against.read_text(encoding="utf-8"))["adapters"] if args.against else None
    differ = 0
    for method, files in hashes.items():
        theirs = (other or {}).get(method, {})
        for name in sorted(files.keys() | theirs.keys()):
            mark = ""
            if other is not None:
                same = files.get(name) == theirs.get(name)
                differ += not same
                mark = "  same" if same else f"  DIFFERS (other: {theirs.get(name, 'missing')})"
            print(f"{method}  {name:32s} {files.get(name, 'missing')}{mark}")
    if other is not None:
        print("identical" if not differ else f"{differ} file(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
