"""`provenir rlaif` with the stub backend and the stub judge."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from provenir.cli import app, main
from provenir.core.store import ArtifactStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def config(tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({"instruction": f"Copy {i:04d} now", "output": f"{i:04d}"}) + "\n"
                             for i in range(5)))
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text("".join(json.dumps({"instruction": f"Copy {i}", "output": str(i)}) + "\n"
                                  for i in range(100, 104)))
    path = tmp_path / "rl.yaml"
    path.write_text(f"name: rl\nbackend: stub\nseed: 5\ndata:\n  train_path: {train}\n  eval_path: {evaluation}\n")
    return path


def test_rlaif_cli_runs_the_loop_and_prints_json(config, tmp_path):
    store = tmp_path / "store"
    result = CliRunner().invoke(app, ["rlaif", str(config), "--judge", "stub", "--iterations", "2",
                                      "--responses-per-prompt", "3", "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    first, second = out["iterations"]
    assert [first["iteration"], second["iteration"]] == [1, 2]
    assert second["provenance"] == [first["run_id"]]
    assert first["preference_count"] + sum(first["dropped"].values()) == 5
    # the stub policy echoes the prompt's last word: "Copy 100" -> "100"
    assert out["baseline"]["metrics"]["exact_match"]["mean"] == 1.0
    assert ArtifactStore(store).ancestors(second["run_id"]) == [first["run_id"]]
    manifest = ArtifactStore(store).load_manifest(second["run_id"])
    assert manifest.inputs["judge"]["identity"].startswith("provenir.stub-judge")
    assert manifest.inputs["prompts"]["path"].endswith("train.jsonl")


def test_rlaif_cli_table_output(config, tmp_path):
    result = CliRunner().invoke(app, ["rlaif", str(config), "--iterations", "1", "--store", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "iteration 1:" in result.output and "adopted" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--iterations", "0"], "n_iterations must be >= 1"),
        (["--responses-per-prompt", "1"], "responses_per_prompt must be >= 2"),
        (["--tolerance", "-1"], "regression_tolerance must be >= 0"),
        (["--judge", "anthropic"], "--judge-model"),
        (["--judge", "gpt"], "unknown judge"),
    ],
)
def test_rlaif_cli_user_errors_are_one_line_exit_2(config, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["rlaif", str(config), "--store", str(tmp_path / "s"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
