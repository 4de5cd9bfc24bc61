"""EvalCallback on the tiny model: real generation, and as a transformers TrainerCallback."""

from __future__ import annotations

import pytest

from provenir.data.dataset import JsonlDataset
from provenir.eval.harness import MultiMetricEvaluator
from provenir.train.eval_callback import EvalCallback, EvalCallbackConfig

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

RECORDS = [{"instruction": f"Repeat the word {w}", "output": w} for w in ("apple", "river", "stone")]


def test_on_step_with_tiny_model_is_deterministic(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    predictions = []
    cb = EvalCallback(
        EvalCallbackConfig(eval_every_n_steps=5, primary_metric="token_f1"),
        MultiMetricEvaluator(metrics=["exact_match", "token_f1"]),
        JsonlDataset.from_records(RECORDS),
        tokenizer=tokenizer, template="alpaca", max_new_tokens=6,
        on_result=lambda r: predictions.append(r.eval_result.per_example["token_f1"]),
    )
    model.train()
    first = cb.on_step(5, model)
    second = cb.on_step(10, model)
    assert model.training  # handed back in training mode
    assert first.metrics == second.metrics  # greedy decoding: same model, same numbers
    assert set(first.metrics) == {"exact_match", "token_f1"}
    assert first.best_step == 5 and second.best_step == 5 and second.evaluations_without_improvement == 1
    assert len(predictions) == 2 and len(predictions[0]) == 3


def test_stops_a_trainer(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    ids = tokenizer("Repeat the word apple. apple", return_tensors="pt")["input_ids"][0]
    train = [{"input_ids": ids, "labels": ids.clone()} for _ in range(32)]
    cb = EvalCallback(
        EvalCallbackConfig(eval_every_n_steps=2, early_stopping_patience=1, primary_metric="exact_match"),
        MultiMetricEvaluator(metrics=["exact_match"]),
        JsonlDataset.from_records(RECORDS),
        max_new_tokens=4,
        # the metric never improves after the first evaluation: patience 1 stops at the second
        generate_fn=lambda m, prompts: ["wrong"] * len(prompts),
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=20, per_device_train_batch_size=2, use_cpu=True,
        report_to=[], save_strategy="no", logging_steps=100, seed=0, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, callbacks=[cb])
    trainer.train()
    assert trainer.state.global_step == 4
    assert [r.step for r in cb.history] == [2, 4]
    assert cb.history[-1].should_stop and cb.history[-1].best_step == 2
    logged = [e for e in trainer.state.log_history if "eval_callback/exact_match" in e]
    assert [e["step"] for e in logged] == [2, 4]
