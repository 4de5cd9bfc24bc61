"""`provenir train`, `run` and `demo` on the stub backend: resume, stops, empty data, the demo config."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from provenir.cli import main
from provenir.core.store import ArtifactStore

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"


def cli(capsys, *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(list(args))
    out, err = capsys.readouterr()
    return info.value.code, out, err


def _stub_config(tmp_path: Path, records: list[dict], name: str = "cli-train", extra: str = "") -> Path:
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nbackend: stub\nmax_steps: 3\nbatch_size: 4\n"
                    f"data:\n  train_path: {data.name}\n  template: chatml\n{extra}")
    return path


# -- item: --resume on the stub backend ------------------------------------------------------------


def test_resume_of_an_unknown_run_fails_and_writes_nothing(tmp_path, capsys):
    store = tmp_path / "store"
    code, out, err = cli(capsys, "train", str(QUICKSTART), "--store", str(store), "--resume", "nope-123")
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: --resume nope-123: run 'nope-123' has no manifest under {store}/runs; "
        "`provenir runs list` shows the runs in a store"
    ]
    assert not store.exists()  # no run, no audit log: refused before any work


def test_resume_of_a_completed_stub_run_is_refused(tmp_path, capsys):
    store = tmp_path / "store"
    code, out, _ = cli(capsys, "train", str(QUICKSTART), "--store", str(store), "--json")
    assert code == 0
    run_id = json.loads(out)["manifest"]["run_id"]
    code, _, err = cli(capsys, "train", str(QUICKSTART), "--store", str(store), "--resume", run_id)
    assert code == 2
    assert "already completed; nothing to resume" in err and "Traceback" not in err
    assert ArtifactStore(store).list_runs() == [run_id]


def test_resume_of_a_stopped_stub_run_continues_it(tmp_path, capsys):
    store = tmp_path / "store"
    code, out, _ = cli(capsys, "train", str(QUICKSTART), "--store", str(store), "--json")
    run_id = json.loads(out)["manifest"]["run_id"]
    manifest_path = store / "runs" / run_id / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["status"] = "stopped"
    manifest_path.write_text(json.dumps(manifest))

    code, out, err = cli(capsys, "train", str(QUICKSTART), "--store", str(store), "--resume", run_id, "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["manifest"]["run_id"] == run_id and payload["manifest"]["status"] == "completed"
    assert payload["manifest"]["metrics"]["resumed_from_step"] == 0
    assert payload["verification"]["ok"] is True
    assert ArtifactStore(store).list_runs() == [run_id]


# -- item: a run stopped by Ctrl-C or SIGTERM ------------------------------------------------------


def _stopping_run_job(signal_name: str):
    from provenir.train import TrainingStopped

    def run_job(config, **_):
        raise TrainingStopped("r-1", signal_name=signal_name, step=37, max_steps=200, resume_step=30)

    return run_job


@pytest.mark.parametrize(("signal_name", "code", "how"), [("SIGTERM", 143, "SIGTERM"), ("SIGINT", 130, "Ctrl-C")])
def test_a_stopped_train_prints_one_line_with_the_resume_command(tmp_path, capsys, monkeypatch,
                                                                  signal_name, code, how):
    import provenir.pipeline

    monkeypatch.setattr(provenir.pipeline, "run_job", _stopping_run_job(signal_name))
    config = _stub_config(tmp_path, [{"instruction": "a", "output": "b"}])
    store = tmp_path / "my store"
    got, out, err = cli(capsys, "train", str(config), "--set", "max_steps=3", "--store", str(store), "--quiet")
    assert got == code
    resume = shlex.join(["provenir", "train", str(config), "--set", "max_steps=3", "--store", str(store),
                         "--resume", "r-1"])
    assert err.strip().splitlines() == [
        f"stopped by {how} at step 37/200: run r-1 is marked stopped; "
        f"continue from its checkpoint at step 30 with: {resume}"
    ]


def test_any_command_whose_run_stops_exits_128_plus_the_signal(tmp_path, capsys, monkeypatch):
    import provenir.pipeline

    monkeypatch.setattr(provenir.pipeline, "run_job", _stopping_run_job("SIGTERM"))
    config = _stub_config(tmp_path, [{"instruction": "a", "output": "b"}])
    code, _, err = cli(capsys, "run", str(config), "--store", str(tmp_path / "store"))
    assert code == 143
    assert err.strip().splitlines() == [
        "stopped by SIGTERM at step 37/200: run r-1 is marked stopped; continue from its checkpoint at "
        "step 30 with: provenir train CONFIG --resume r-1"
    ]


def test_a_stop_without_a_checkpoint_says_it_cannot_be_continued():
    from provenir.train import TrainingStopped

    stop = TrainingStopped("r-2", signal_name="SIGTERM", step=4, max_steps=9)
    assert stop.exit_code == 143 and isinstance(stop, KeyboardInterrupt)
    assert stop.describe("ignored") == (
        "stopped by SIGTERM at step 4/9: run r-2 is marked stopped; it has no checkpoint to continue "
        "from (set training.save_steps to make runs resumable)"
    )


# -- item: empty data, or every record removed ----------------------------------------------------


def test_an_empty_training_file_is_named_as_empty(tmp_path, capsys):
    config = _stub_config(tmp_path, [], name="empty")
    code, out, err = cli(capsys, "run", str(config), "--store", str(tmp_path / "store"))
    assert code == 2
    assert err.strip().splitlines() == [f"error: {tmp_path / 'empty.jsonl'}: the dataset is empty (0 records)"]


def test_records_all_removed_by_curation_are_summarised_in_words(tmp_path, capsys):
    long = [
        {"instruction": f"Explain in plain words why the number {i} is interesting to people who study "
                        "arithmetic and number theory today",
         "output": f"The number {i} is interesting because it has several properties that mathematicians "
                   "have studied for a very long time."}
        for i in range(9)
    ]
    junk = [{"instruction": "hi", "output": "lorem lorem lorem lorem lorem lorem lorem lorem"}] * 3
    (tmp_path / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in long))
    config = _stub_config(tmp_path, long + junk, name="curated",
                          extra="  eval_path: eval.jsonl\ncuration:\n  quality_threshold: 0.3\n")
    code, _, err = cli(capsys, "train", str(config), "--store", str(tmp_path / "store"))
    assert code == 2
    [line] = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert line == (
        f"error: {tmp_path / 'curated.jsonl'}: no records left to train on: curation removed all 12 (3 "
        "below the quality threshold 0.3, 9 contaminated: they match the eval set); lower "
        "curation.quality_threshold; check data.eval_path or set curation.decontamination: off"
    )
    assert "{" not in err


# -- item: which config `provenir demo` trains ------------------------------------------------------


@pytest.fixture()
def demo_probe(monkeypatch, tmp_path):
    """`provenir demo` with training replaced by an error naming the config it was given."""
    import provenir._demo as demo_module
    from provenir.core.errors import ConfigError

    def fake_run_demo(config, **_):
        raise ConfigError(f"would train {config.name} on {config.data.train_path}")

    monkeypatch.setattr(demo_module, "run_demo", fake_run_demo)
    monkeypatch.setattr(demo_module, "tiny_model_for_store", lambda root, seed=0: tmp_path / "tiny")
    decoy = tmp_path / "examples" / "demo.yaml"
    decoy.parent.mkdir()
    (decoy.parent / "mine.jsonl").write_text(json.dumps({"instruction": "a", "output": "b"}) + "\n")
    decoy.write_text("name: my-own-demo\nbackend: stub\ndata:\n  train_path: mine.jsonl\n  eval_path: mine.jsonl\n"
                     "  template: chatml\n")
    monkeypatch.chdir(tmp_path)
    return decoy


def test_demo_without_config_trains_the_bundled_demo_not_the_local_one(demo_probe, capsys, tmp_path):
    code, _, err = cli(capsys, "demo", "--store", str(tmp_path / "store"), "--quiet")
    assert code == 2
    assert f"would train demo-copy on {REPO / 'examples' / 'data' / 'copy_train.jsonl'}" in err


def test_demo_with_config_trains_that_config(demo_probe, capsys, tmp_path):
    code, _, err = cli(capsys, "demo", "--config", "examples/demo.yaml", "--store", str(tmp_path / "store"))
    assert code == 2
    assert f"would train my-own-demo on {demo_probe.parent / 'mine.jsonl'}" in err


def test_demo_help_names_the_bundled_default(capsys):
    code, out, _ = cli(capsys, "demo", "--help")
    assert code == 0
    text = " ".join(out.replace("│", " ").split())  # the option table's borders and wrapping
    assert "default: examples/demo.yaml" not in text.lower()
    assert "Default: the demo config that ships with Provenir (its examples/demo.yaml, never one in the " \
           "current folder)" in text


def test_tiny_model_reuses_its_own_build_and_replaces_another_only_with_overwrite(tmp_path, capsys):
    folder = tmp_path / "tiny"
    assert cli(capsys, "tiny-model", str(folder), "--seed", "1")[0] == 0
    weights = (folder / "model.safetensors").read_bytes()
    assert cli(capsys, "tiny-model", str(folder), "--seed", "1")[0] == 0  # the same build: reused
    code, _, err = cli(capsys, "tiny-model", str(folder), "--seed", "2")
    assert code == 2 and "holds another model" in err and "--overwrite" in err
    assert (folder / "model.safetensors").read_bytes() == weights
    assert cli(capsys, "tiny-model", str(folder), "--seed", "2", "--overwrite")[0] == 0
    assert (folder / "model.safetensors").read_bytes() != weights
