"""With `--json`, stdout carries the JSON document only, whatever else writes to stdout meanwhile.

Libraries do: DeepSpeed's logger keeps a handler on the original ``sys.stdout`` from import time,
C extensions write to file descriptor 1. The subprocess below reproduces both (and a plain
``print``) from inside the command, and parses the whole of stdout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from provenir.cli import main

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"

# a library logger bound to the original stdout before the CLI starts (as DeepSpeed's is), and a
# hook, run inside the command, that writes through it, through fd 1 and through print()
NOISY_MAIN = textwrap.dedent("""
    import logging, os, sys
    handler = logging.StreamHandler(sys.stdout)
    library = logging.getLogger("noisy_library")
    library.addHandler(handler)
    library.propagate = False

    def noise(where):
        library.warning("[WARNING] [real_accelerator.py:213:get_accelerator] noise from %s", where)
        os.write(1, b"raw fd 1 write from " + where.encode() + b"\\n")
        print("print() from", where)

    import provenir.core.store as store_module
    import provenir.train.backends.stub as stub_module

    real_train, real_list = stub_module.StubBackend._train, store_module.ArtifactStore.list_runs

    def noisy_train(self, *args, **kwargs):
        noise("train")
        return real_train(self, *args, **kwargs)

    def noisy_list(self):
        noise("runs list")
        return real_list(self)

    stub_module.StubBackend._train = noisy_train
    store_module.ArtifactStore.list_runs = noisy_list
    from provenir.cli import main
    main(sys.argv[1:])
""")


def _noisy_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NOISY_MAIN, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


@pytest.mark.parametrize("command", [["train", str(QUICKSTART)], ["runs", "list"]], ids=["train", "runs-list"])
def test_json_stdout_is_only_the_document(tmp_path, command):
    store = str(tmp_path / "store")
    seeded = _noisy_cli("train", str(QUICKSTART), "--store", store, cwd=tmp_path)
    assert seeded.returncode == 0, seeded.stderr[-2000:]

    proc = _noisy_cli(*command, "--store", store, "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    document = json.loads(proc.stdout)  # the whole of stdout, not a slice of it
    where = command[0] if command[0] == "train" else "runs list"
    for noise in (f"noise from {where}", f"raw fd 1 write from {where}", f"print() from {where}"):
        assert noise in proc.stderr and noise not in proc.stdout
    if command[0] == "train":
        assert document["manifest"]["status"] == "completed" and document["verification"]["ok"] is True
    else:
        assert len(document) == 1 and document[0]["status"] == "completed"


def test_without_json_stdout_is_left_alone(tmp_path):
    proc = _noisy_cli("train", str(QUICKSTART), "--store", str(tmp_path / "store"), "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "raw fd 1 write from train" in proc.stdout and "manifest" in proc.stdout


def test_main_restores_stdout_after_a_json_command(tmp_path, capsys):
    stdout, fd1 = sys.stdout, os.fstat(1)
    with pytest.raises(SystemExit) as info:
        main(["train", str(QUICKSTART), "--store", str(tmp_path / "store"), "--json"])
    assert info.value.code == 0
    assert sys.stdout is stdout
    assert (os.fstat(1).st_dev, os.fstat(1).st_ino) == (fd1.st_dev, fd1.st_ino)
    out, _ = capsys.readouterr()
    assert json.loads(out)["manifest"]["status"] == "completed"


def test_json_on_an_error_restores_stdout_and_prints_only_the_error(tmp_path, capsys):
    stdout = sys.stdout
    with pytest.raises(SystemExit) as info:  # the bad --set is found inside the command, under --json
        main(["train", str(QUICKSTART), "--store", str(tmp_path / "store"), "--json", "--set", "nokv"])
    assert info.value.code == 2 and sys.stdout is stdout
    out, err = capsys.readouterr()
    assert out == ""
    assert err.strip().splitlines() == ["error: --set 'nokv': expected KEY=VALUE, e.g. --set peft.rank=16"]
