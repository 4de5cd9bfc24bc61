"""`provenir eval` and `provenir bench` (argument handling; bench's run is covered by integration)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from provenir.cli import app

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def files(tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"q{i}", "output": str(i)}) + "\n" for i in range(6)))
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"prediction": str(i) if i < 4 else "x"}) + "\n" for i in range(6)))
    base = tmp_path / "base.txt"
    base.write_text("0\nx\nx\nx\nx\nx\n")
    return data, preds, base


def test_eval_flags_json(files):
    data, preds, base = files
    result = CliRunner().invoke(
        app, ["eval", "--dataset", str(data), "--predictions", str(preds), "--baseline", str(base),
              "--metric", "exact_match", "--metric", "regex:^\\d$", "--resamples", "500", "--json"],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    em = out["metrics"]["exact_match"]
    assert em["mean"] == pytest.approx(4 / 6) and em["n"] == 6 and em["ci_lower"] <= em["mean"] <= em["ci_upper"]
    assert out["metrics"]["regex:^\\d$"]["mean"] == pytest.approx(4 / 6)
    assert out["n_resamples"] == 500
    cmp = out["comparison"]["metrics"]["exact_match"]
    assert cmp["mean_a"] == pytest.approx(1 / 6) and cmp["difference"] == pytest.approx(3 / 6)


def test_eval_config_file_and_table(files, tmp_path):
    data, preds, _ = files
    config = tmp_path / "eval.yaml"
    config.write_text(f"dataset: {data.name}\npredictions: {preds.name}\nmetrics: [exact_match, token_f1]\nseed: 3\n")
    result = CliRunner().invoke(app, ["eval", str(config)])
    assert result.exit_code == 0, result.output
    assert "exact_match" in result.output and "0.6667" in result.output and "95% CI" in result.output
    assert "seed 3" in result.output


def test_eval_errors_are_one_line(files, tmp_path):
    data, preds, _ = files
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"dataset: {data}\npredictions: {preds}\nmetricz: [x]\n")
    proc = subprocess.run([sys.executable, "-m", "provenir.cli", "eval", str(bad)], capture_output=True, text=True)
    if proc.returncode != 2:  # the module may not be runnable with -m; fall back to the entry point
        proc = subprocess.run(["provenir", "eval", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "metricz" in proc.stderr and "Traceback" not in proc.stderr
    assert f"{bad}:3: metricz: unknown key; allowed keys: dataset, predictions, baseline, metrics" in proc.stderr
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--dataset", str(data)])
    assert result.exit_code != 0
    result = runner.invoke(app, ["eval", "--dataset", str(data), "--predictions", str(preds), "--confidence", "2"])
    assert result.exit_code != 0 and str(result.exception).startswith("--confidence / confidence: ")
    result = runner.invoke(app, ["eval", "--dataset", str(data), "--predictions", str(preds),
                                 "--reference-field", "answer"])
    assert "no 'answer' field" in str(result.exception) and "--reference-field" in str(result.exception)
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"dataset: {data}\n")
    result = runner.invoke(app, ["eval", str(missing)])
    assert str(result.exception) == f"{missing}: predictions: required: add it to the file"
    short = tmp_path / "short.txt"
    short.write_text("1\n")
    result = runner.invoke(app, ["eval", "--dataset", str(data), "--predictions", str(short)])
    assert "1 predictions for 6 records" in str(result.exception)


def test_bench_rejects_bad_limit(tmp_path):
    result = CliRunner().invoke(app, ["bench", str(tmp_path), "--task", "provenir_arith", "--limit", "0"])
    assert result.exit_code != 0 and "limit" in str(result.exception)
