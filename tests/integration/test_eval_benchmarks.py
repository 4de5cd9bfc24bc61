"""BenchmarkEvaluator on the tiny model with the shipped offline lm-eval tasks.

An untrained tiny model scores near chance, so the value checks recompute the multiple-choice
accuracy independently (transformers log-likelihoods, the way lm-eval defines them) and require
the same number, for the base model and for a PEFT adapter over it.
"""

from __future__ import annotations

import json

import pytest

from provenir.core.errors import ConfigError
from provenir.eval.benchmarks import (
    SHIPPED_TASKS_DIR,
    BenchmarkConfig,
    BenchmarkError,
    BenchmarkEvaluator,
    BenchmarkResult,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

LIMIT = 12


def _arith_docs(limit):
    lines = (SHIPPED_TASKS_DIR / "arith_test.jsonl").read_text().splitlines()[:limit]
    return [json.loads(line) for line in lines]


def independent_accuracy(model, tokenizer, limit):
    """lm-eval's multiple-choice accuracy, recomputed: argmax of sum log p(' choice' | context)."""
    import torch

    correct = 0
    for doc in _arith_docs(limit):
        context = f"Question: {doc['question']}\nAnswer:"
        scores = []
        for choice in doc["choices"]:
            whole = tokenizer.encode(context + " " + choice)
            ctx = tokenizer.encode(context)
            cont = whole[len(ctx):]
            with torch.no_grad():
                logits = model(torch.tensor([whole])).logits[0]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            positions = range(len(ctx) - 1, len(whole) - 1)
            scores.append(sum(float(logprobs[p, t]) for p, t in zip(positions, cont)))
        correct += int(max(range(len(scores)), key=lambda i: (scores[i], -i)) == doc["label"])
    return correct / limit


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tiny_model_dir)).save_pretrained(str(out))
    return out


def test_shipped_tasks_base_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    evaluator = BenchmarkEvaluator(batch_size=4)
    arith, copy, arith_again = evaluator.run_suite(
        tiny_model_dir,
        [
            BenchmarkConfig(benchmark="provenir_arith", limit=LIMIT),
            BenchmarkConfig(benchmark="provenir_copy", num_fewshot=1, limit=3),
            BenchmarkConfig(benchmark="provenir_arith", limit=LIMIT),
        ],
    )
    assert isinstance(arith, BenchmarkResult)
    assert arith.benchmark == "provenir_arith" and arith.num_examples == LIMIT
    assert arith.metric == "acc,none" and arith.config.limit == LIMIT
    assert 0.0 <= arith.score <= 1.0 and "acc_norm,none" in arith.metrics
    assert arith_again.score == arith.score  # deterministic
    assert copy.num_examples == 3 and copy.metric.startswith("exact_match")
    assert copy.score in (0.0, 1 / 3, 2 / 3, 1.0)

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert arith.score == pytest.approx(independent_accuracy(model, tokenizer, LIMIT))


def test_peft_adapter(tiny_model_dir, adapter_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = BenchmarkEvaluator(batch_size=4).run(adapter_dir, BenchmarkConfig(benchmark="provenir_arith", limit=LIMIT))
    assert f"peft={adapter_dir}" in result.model_args
    assert f"pretrained={tiny_model_dir}" in result.model_args
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert result.score == pytest.approx(independent_accuracy(model, tokenizer, LIMIT))


def test_errors(tiny_model_dir, tmp_path):
    evaluator = BenchmarkEvaluator()
    with pytest.raises(BenchmarkError, match="unknown benchmark 'no_such_task'"):
        evaluator.run(tiny_model_dir, BenchmarkConfig(benchmark="no_such_task"))
    with pytest.raises(ConfigError, match="does not exist"):
        evaluator.run(tmp_path / "missing", BenchmarkConfig(benchmark="provenir_arith"))
    with pytest.raises(ConfigError, match="neither a model folder"):
        evaluator.run(tmp_path, BenchmarkConfig(benchmark="provenir_arith"))
    # a hub benchmark without the hub: a clear error, not a traceback
    with pytest.raises(BenchmarkError, match="Hugging Face hub"):
        evaluator.run(tiny_model_dir, BenchmarkConfig(benchmark="arc_easy", limit=2))


def test_user_task_dir(tiny_model_dir, tmp_path):
    data = tmp_path / "tasks"
    data.mkdir()
    rows = [{"q": "Is fire hot?", "choices": ["yes", "no"], "label": 0}] * 3
    (data / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (data / "mine.yaml").write_text(
        "task: my_yesno\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: rows.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: \"{{q}}\"\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: label\nmetric_list:\n  - metric: acc\nmetadata:\n  version: 1.0\n"
    )
    result = BenchmarkEvaluator(task_dirs=[data]).run(tiny_model_dir, BenchmarkConfig(benchmark="my_yesno"))
    assert result.num_examples == 3 and result.score in (0.0, 1.0)  # same doc thrice: all or nothing


def test_bench_cli_json(tiny_model_dir):
    from typer.testing import CliRunner

    from provenir.cli import app

    result = CliRunner().invoke(
        app, ["bench", str(tiny_model_dir), "--task", "provenir_arith", "--limit", "4", "--batch-size", "4", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output[result.output.index("{"):])
    [row] = payload["results"]
    assert row["benchmark"] == "provenir_arith" and row["num_examples"] == 4
    assert row["score"] in (0.0, 0.25, 0.5, 0.75, 1.0)


def test_no_git_noise_outside_a_repository(tiny_model_dir, tmp_path, monkeypatch, capfd):
    """lm-eval's own git probe would print 'fatal: not a git repository' once per benchmark."""
    import lm_eval.evaluator

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    probe = lm_eval.evaluator.get_git_commit_hash
    BenchmarkEvaluator(batch_size=4).run_suite(
        str(tiny_model_dir), [BenchmarkConfig(benchmark="provenir_arith", limit=2),
                              BenchmarkConfig(benchmark="provenir_arith", limit=3)])
    assert "not a git repository" not in capfd.readouterr().err
    assert lm_eval.evaluator.get_git_commit_hash is probe  # restored afterwards
