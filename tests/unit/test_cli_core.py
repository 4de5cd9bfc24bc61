"""The core CLI: run, config validate, data stats, manifest show|verify|lineage, runs list."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from provenir.cli import main

REPO = Path(__file__).resolve().parents[2]


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def test_help_imports_no_heavy_modules():
    code = (
        "import sys\n"
        "from provenir.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'ray', 'transformers', 'trl', 'peft', 'sentence_transformers',"
        " 'mlflow', 'wandb', 'datasets', 'pandas') if m in sys.modules)\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY=\n" in proc.stdout or proc.stdout.strip().endswith("HEAVY="), proc.stdout
    assert "Commands" in proc.stdout and "manifest" in proc.stdout


def test_version(capsys):
    from provenir import __version__

    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"provenir {__version__}"


def test_console_script_exit_codes(tmp_path):
    exe = Path(sys.executable).parent / "provenir"
    if not exe.exists():
        pytest.skip("console script not installed in this interpreter's environment")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbackend: nope\n")
    proc = subprocess.run([str(exe), "config", "validate", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: {bad}:2: backend: unknown backend 'nope'; allowed: stub, trl (got 'nope')"
    ]
    assert "Traceback" not in proc.stderr


def _config(tmp_path: Path) -> Path:
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"{i}+1?", "output": str(i + 1)}) + "\n" for i in range(12)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"name: cli-test\nbackend: stub\nmax_steps: 3\nbatch_size: 4\noutput_dir: {tmp_path / 'store'}\n"
        "data:\n  train_path: train.jsonl\n  template: chatml\n"
    )
    return cfg


@pytest.fixture
def no_env_store(monkeypatch):
    """The suite sets $PROVENIR_STORE; these tests check the config's own output_dir."""
    monkeypatch.delenv("PROVENIR_STORE", raising=False)


def test_run_then_manifest_commands(tmp_path, capsys, no_env_store):
    cfg = _config(tmp_path)
    store = str(tmp_path / "store")
    code, out, _ = cli(capsys, "run", str(cfg), "--json")
    assert code == 0
    payload = json.loads(out)
    run_id = payload["manifest"]["run_id"]
    assert payload["verification"]["ok"] is True
    assert payload["manifest"]["status"] == "completed"
    assert payload["manifest"]["metrics"]["steps"] == 3

    code, out, _ = cli(capsys, "run", str(cfg), "--json", "--parent", run_id, "--set", "seed=7")
    child = json.loads(out)["manifest"]
    assert code == 0 and child["provenance"] == [run_id] and child["seed"] == 7

    code, out, _ = cli(capsys, "runs", "list", "--store", store, "--json")
    assert [r["run_id"] for r in json.loads(out)] == [run_id, child["run_id"]]

    code, out, _ = cli(capsys, "manifest", "show", run_id, "--store", store, "--json")
    assert code == 0 and json.loads(out)["run_id"] == run_id
    code, out, _ = cli(capsys, "manifest", "show", run_id, "--store", store)
    assert code == 0 and "config_hash" in out and run_id in out

    code, out, _ = cli(capsys, "manifest", "lineage", child["run_id"], "--store", store, "--json")
    assert json.loads(out) == {"run_id": child["run_id"], "ancestors": [run_id], "descendants": []}
    code, out, _ = cli(capsys, "manifest", "lineage", run_id, "--store", store, "--json")
    assert json.loads(out)["descendants"] == [child["run_id"]]

    code, out, _ = cli(capsys, "manifest", "verify", run_id, "--store", store)
    assert code == 0 and "verified" in out

    adapter = Path(store) / "runs" / run_id / "adapter" / "stub_adapter.json"
    adapter.write_text(adapter.read_text().replace("0", "1", 1))
    code, out, _ = cli(capsys, "manifest", "verify", run_id, "--store", store, "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["artifact:adapter/stub_adapter.json"]


def test_run_with_bad_data_fails_cleanly(tmp_path, capsys, no_env_store):
    cfg = _config(tmp_path)
    (tmp_path / "train.jsonl").write_text('{"instruction": "a", "output": "b"}\n{"question": "no"}\n')
    code, _, err = cli(capsys, "run", str(cfg))
    assert code == 2
    assert "record 2: no field a template can read" in err
    (tmp_path / "train.jsonl").write_text('{"instruction": "a"}\n{oops\n')
    code, _, err = cli(capsys, "run", str(cfg))
    assert code == 2 and f"{tmp_path / 'train.jsonl'}:2: invalid JSON" in err
    runs = tmp_path / "store" / "runs"
    assert not runs.exists() or all(
        json.loads((d / "manifest.json").read_text())["status"] == "failed" for d in runs.iterdir()
    )


def test_run_takes_the_store_like_train(tmp_path, capsys, monkeypatch):
    cfg = _config(tmp_path)
    monkeypatch.setenv("PROVENIR_STORE", str(tmp_path / "env-store"))
    code, out, _ = cli(capsys, "run", str(cfg), "--json")
    run_id = json.loads(out)["manifest"]["run_id"]
    assert code == 0
    assert (tmp_path / "env-store" / "runs" / run_id / "manifest.json").is_file()
    assert not (tmp_path / "store").exists()  # the config's output_dir

    code, out, _ = cli(capsys, "run", str(cfg), "--json", "--store", str(tmp_path / "flag-store"))
    run_id = json.loads(out)["manifest"]["run_id"]
    assert code == 0 and (tmp_path / "flag-store" / "runs" / run_id / "manifest.json").is_file()

    monkeypatch.delenv("PROVENIR_STORE")
    code, out, _ = cli(capsys, "run", str(cfg), "--json")
    run_id = json.loads(out)["manifest"]["run_id"]
    assert code == 0 and (tmp_path / "store" / "runs" / run_id / "manifest.json").is_file()

    code, out, _ = cli(capsys, "run", "--help")
    assert code == 0 and "PROVENIR_STORE" in out


def test_run_and_validate_name_the_override_that_broke_a_config(tmp_path, capsys):
    cfg = _config(tmp_path)
    for command in (["run"], ["config", "validate"]):
        code, _, err = cli(capsys, *command, str(cfg), "--set", "peft.rnk=3")
        assert code == 2
        assert err.startswith("error: --set peft.rnk=3: peft.rnk: unknown key; allowed keys here: alpha,"), err
        code, _, err = cli(capsys, *command, str(cfg), "--set", "max_steps=abc")
        assert code == 2 and err.startswith("error: --set max_steps=abc: max_steps: Input should be a valid integer")


def test_set_paths_resolve_against_the_working_directory(tmp_path, capsys, monkeypatch):
    (tmp_path / "configs").mkdir()
    cfg = _config(tmp_path / "configs")
    cwd = tmp_path / "work"
    (cwd / "data").mkdir(parents=True)
    (cwd / "data" / "other.jsonl").write_text('{"instruction": "1+1?", "output": "2"}\n')
    monkeypatch.chdir(cwd)
    code, out, err = cli(capsys, "config", "validate", str(cfg), "--set", "data.train_path=data/other.jsonl", "--json")
    assert code == 0, err
    assert json.loads(out)["config"]["data"]["train_path"] == str((cwd / "data" / "other.jsonl").resolve())
    code, _, err = cli(capsys, "config", "validate", str(cfg), "--set", "data.train_path=data/nope.jsonl")
    assert code == 2
    assert err.strip() == (
        f"error: --set data.train_path=data/nope.jsonl: data.train_path: file not found: "
        f"{(cwd / 'data' / 'nope.jsonl').resolve()}"
    )


def test_validate_rejects_what_run_would_reject(tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text().replace("template: chatml", "template: chatmll"))
    expected = (
        f"error: {cfg}:8: data.template: unknown template 'chatmll'; did you mean 'chatml'? "
        "(available: alpaca, chatml, llama3, mistral, phi3, raw_completion)"
    )
    for command in (["config", "validate"], ["run"]):
        code, _, err = cli(capsys, *command, str(cfg))
        assert code == 2 and err.strip() == expected, err

    cfg.write_text(cfg.read_text().replace("template: chatmll", "template: chatml"))
    (tmp_path / "train.jsonl").unlink()
    for command in (["config", "validate"], ["run"]):
        code, _, err = cli(capsys, *command, str(cfg))
        assert code == 2
        assert err.strip() == f"error: {cfg}:7: data.train_path: file not found: {(tmp_path / 'train.jsonl').resolve()}"


def test_validate_accepts_unquoted_off(tmp_path, capsys):
    cfg = _config(tmp_path)
    cfg.write_text(cfg.read_text() + "governance:\n  pii: off\n  secrets: off\ncuration:\n  decontamination: off\n")
    code, out, err = cli(capsys, "config", "validate", str(cfg), "--json")
    assert code == 0, err
    config = json.loads(out)["config"]
    assert (config["governance"]["pii"], config["governance"]["secrets"]) == ("off", "off")
    assert config["curation"]["decontamination"] == "off"


def test_run_needs_train_path(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: x\n")
    code, _, err = cli(capsys, "run", str(cfg))
    assert code == 2 and "data.train_path: required" in err


def test_manifest_errors(tmp_path, capsys):
    code, _, err = cli(capsys, "manifest", "show", "../../etc/passwd", "--store", str(tmp_path))
    assert code == 2 and "invalid run id" in err
    code, _, err = cli(capsys, "manifest", "verify", "nope", "--store", str(tmp_path))
    assert code == 2 and "run 'nope' not found" in err
    code, _, err = cli(capsys, "manifest", "show", "20260101T000000Z-none-00000000", "--store", str(tmp_path))
    assert code == 2 and "has no manifest" in err


def test_config_validate(tmp_path, capsys):
    code, out, _ = cli(capsys, "config", "validate", str(REPO / "examples" / "quickstart.yaml"), "--json")
    payload = json.loads(out)
    assert code == 0 and payload["valid"] and len(payload["config_hash"]) == 64
    assert payload["config"]["backend"] == "stub"


def test_data_stats(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": "xx"}\n{"a": "xxxx", "b": ["yy"]}\n\n{"a": ""}\n')
    code, out, _ = cli(capsys, "data", "stats", str(path), "--json", "--bins", "2")
    stats = json.loads(out)
    assert code == 0
    assert stats["records"] == 3 and stats["fields"] == {"a": 3, "b": 1}
    assert stats["length_chars"]["min"] == 0 and stats["length_chars"]["max"] == 6
    assert [b["count"] for b in stats["length_chars"]["histogram"]] == [2, 1]
    from provenir.core.jsonl import hash_jsonl

    assert stats["sha256"] == hash_jsonl(path)[0]
    code, out, _ = cli(capsys, "data", "stats", str(path))
    assert code == 0 and "3 records" in out and "length histogram" in out
    code, _, err = cli(capsys, "data", "stats", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "file not found" in err


def test_run_as_module_entry_point(tmp_path):
    cfg = _config(tmp_path)
    env = {**os.environ, "PROVENIR_STORE": str(tmp_path / "elsewhere")}
    proc = subprocess.run(
        [sys.executable, "-m", "provenir.cli", "run", str(cfg)], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "verified" in proc.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["run"], "Missing argument"),
        (["nosuch"], "No such command 'nosuch'"),
        (["data", "stats", "x.jsonl", "--bins", "many"], "Invalid value for '--bins'"),
    ],
)
def test_usage_errors_are_one_message_not_a_traceback(capsys, args, fragment):
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert fragment in err and "Traceback" not in err
