"""Adapter files do not depend on the interpreter's hash seed: every adapter_config.json PEFT writes
(DPO's ``ref/`` one included) has its set-valued fields sorted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from provenir.train.backends._trl.outputs import normalise_adapter_config

ROOT = Path(__file__).resolve().parents[2]


def _write(folder: Path, modules: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 4, "target_modules": modules,
                                                            "modules_to_save": None}), encoding="utf-8")


def test_every_adapter_config_is_sorted(tmp_path):
    _write(tmp_path, ["v_proj", "q_proj", "down_proj"])
    _write(tmp_path / "ref", ["o_proj", "k_proj"])
    normalise_adapter_config(tmp_path)
    top = json.loads((tmp_path / "adapter_config.json").read_text())
    ref = json.loads((tmp_path / "ref" / "adapter_config.json").read_text())
    assert top["target_modules"] == ["down_proj", "q_proj", "v_proj"]
    assert ref["target_modules"] == ["k_proj", "o_proj"]
    assert top["modules_to_save"] is None


_CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import json
    from provenir.train.backends._trl.outputs import normalise_adapter_config
    out = Path(sys.argv[2])
    for sub in ("", "ref"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        # what PEFT does with all-linear: a set, written in the set's (hash-seeded) order
        modules = list({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
        (out / sub / "adapter_config.json").write_text(json.dumps({"target_modules": modules}))
    normalise_adapter_config(out)
""")


def test_bytes_equal_across_hash_seeds(tmp_path):
    outputs = []
    for seed in ("1", "2", "3"):
        out = tmp_path / seed
        subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), str(out)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.append(((out / "adapter_config.json").read_bytes(), (out / "ref" / "adapter_config.json").read_bytes()))
    assert outputs[0] == outputs[1] == outputs[2]
