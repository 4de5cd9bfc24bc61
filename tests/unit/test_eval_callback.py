"""EvalCallback with a controlled fake model: schedule, best step, patience, regression, generation."""

from __future__ import annotations

import pytest

from provenir.core.errors import ConfigError, DataError
from provenir.data.dataset import JsonlDataset
from provenir.eval.harness import MultiMetricEvaluator
from provenir.train.eval_callback import EvalCallback, EvalCallbackConfig, EvalCallbackResult, generate_greedy

pytestmark = pytest.mark.timeout(60)

RECORDS = [{"instruction": f"Say {w}", "output": w} for w in ("alpha", "beta", "gamma", "delta")]


def scripted(accuracies):
    """A generate_fn whose k-th call gets the first round(acc*4) answers right."""
    calls = iter(accuracies)

    def generate(model, prompts):
        correct = round(next(calls) * len(prompts))
        return [r["output"] if i < correct else "wrong" for i, r in enumerate(RECORDS)]

    return generate


def make(accuracies, **config):
    return EvalCallback(
        EvalCallbackConfig(**config), MultiMetricEvaluator(metrics=["exact_match", "token_f1"]),
        JsonlDataset.from_records(RECORDS), generate_fn=scripted(accuracies),
    )


def test_schedule_and_best_step():
    cb = make([0.25, 0.75, 0.5], eval_every_n_steps=10, early_stopping_patience=3)
    assert cb.on_step(0, None) is None and cb.on_step(5, None) is None
    first = cb.on_step(10, None)
    assert isinstance(first, EvalCallbackResult)
    assert first == EvalCallbackResult(10, {"exact_match": 0.25, "token_f1": 0.25}, False, 10,
                                       regressed=False, best_metric=0.25, evaluations_without_improvement=0,
                                       eval_result=first.eval_result)
    second = cb.on_step(20, None)
    assert second.best_step == 20 and second.metrics["exact_match"] == 0.75
    third = cb.on_step(30, None)
    assert third.best_step == 20 and third.regressed  # 0.5 < 0.75 - 0.02
    assert third.evaluations_without_improvement == 1 and not third.should_stop
    assert [r.step for r in cb.history] == [10, 20, 30]


def test_early_stopping_after_patience():
    cb = make([0.5, 0.5, 0.5, 0.5], eval_every_n_steps=1, early_stopping_patience=2)
    results = [cb.on_step(s, None) for s in (1, 2, 3)]
    assert [r.should_stop for r in results] == [False, False, True]
    assert results[-1].best_step == 1 and cb.should_stop
    assert not any(r.regressed for r in results)  # equal is not a drop


def test_patience_zero_never_stops_and_tolerance():
    cb = make([0.75, 0.25, 0.25, 0.25, 0.75], eval_every_n_steps=1, early_stopping_patience=0, regression_tolerance=0.6)
    results = [cb.on_step(s, None) for s in range(1, 6)]
    assert not any(r.should_stop for r in results)
    assert not any(r.regressed for r in results)  # a 0.5 drop is within the 0.6 tolerance
    assert results[-1].best_step == 1  # a tie does not move the best step


def test_validation():
    ds = JsonlDataset.from_records(RECORDS)
    with pytest.raises(ConfigError, match="primary_metric='bleu'"):
        EvalCallback(EvalCallbackConfig(primary_metric="bleu"), MultiMetricEvaluator(), ds)
    with pytest.raises(DataError, match="empty"):
        EvalCallback(EvalCallbackConfig(), MultiMetricEvaluator(), JsonlDataset.from_records([]))
    with pytest.raises(DataError, match="eval record 0"):
        EvalCallback(EvalCallbackConfig(), MultiMetricEvaluator(), JsonlDataset.from_records([{"instruction": "x"}]))
    with pytest.raises(ConfigError, match="unknown template"):
        EvalCallback(EvalCallbackConfig(), MultiMetricEvaluator(), ds, template="nope")
    cb = EvalCallback(EvalCallbackConfig(eval_every_n_steps=1), MultiMetricEvaluator(), ds)
    with pytest.raises(ConfigError, match="tokenizer="):
        cb.on_step(1, object())
    with pytest.raises(Exception):
        EvalCallbackConfig(eval_every_n_steps=0)


def test_prompts_come_from_the_template_and_messages_references():
    seen = []
    records = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]
    cb = EvalCallback(EvalCallbackConfig(eval_every_n_steps=1), MultiMetricEvaluator(), JsonlDataset.from_records(records),
                      template="chatml", generate_fn=lambda m, prompts: seen.extend(prompts) or ["Hello"])
    result = cb.on_step(1, None)
    assert seen == ["<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"]
    assert result.metrics["exact_match"] == 1.0


class FakeTokenizer:
    """One token per prompt; decoding maps answer ids back to text."""

    pad_token_id, eos_token_id = 0, 1

    def __init__(self, answers):
        self.padding_side = "right"
        self.answers = answers
        self.prompt_ids = {}
        self.texts = {}

    def _id(self, text):
        if text not in self.prompt_ids:
            self.prompt_ids[text] = 100 + len(self.prompt_ids)
        return self.prompt_ids[text]

    def __call__(self, texts, return_tensors, padding, add_special_tokens):
        import torch

        assert self.padding_side == "left" and not add_special_tokens
        ids = torch.tensor([[self._id(t)] for t in texts])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    def batch_decode(self, sequences, skip_special_tokens):
        return [self.texts[int(seq[0])] for seq in sequences]


class FakeModel:
    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.training = True
        self.modes = []
        self.calls = []

    def eval(self):
        self.training = False
        self.modes.append("eval")

    def train(self):
        self.training = True
        self.modes.append("train")

    def generate(self, input_ids, attention_mask, max_new_tokens, do_sample, pad_token_id, eos_token_id):
        import torch

        assert not self.training and do_sample is False
        self.calls.append((input_ids.shape[0], max_new_tokens))
        by_id = {v: k for k, v in self.tokenizer.prompt_ids.items()}
        new = []
        for row in input_ids:
            answer = self.tokenizer.answers[by_id[int(row[0])]]
            token = 1000 + len(self.tokenizer.texts)
            self.tokenizer.texts[token] = answer
            new.append([token])
        return torch.cat([input_ids, torch.tensor(new)], dim=1)


def test_generation_through_model_generate():
    ds = JsonlDataset.from_records(RECORDS)
    cb = EvalCallback(EvalCallbackConfig(eval_every_n_steps=1), MultiMetricEvaluator(), ds, tokenizer=None,
                      max_new_tokens=7, batch_size=3)
    answers = {p: (r["output"] if i % 2 == 0 else f" {r['output']}<|im_end|>junk") for i, (p, r) in enumerate(zip(cb.prompts, RECORDS))}
    answers[cb.prompts[3]] = "nope\n### Instruction: more"
    tokenizer = FakeTokenizer(answers)
    cb.tokenizer = tokenizer
    model = FakeModel(tokenizer)
    result = cb.on_step(1, model)
    assert result.metrics["exact_match"] == 0.75  # stop strings cut "<|im_end|>junk"; "nope" is wrong
    assert model.calls == [(3, 7), (1, 7)]  # batches of 3 then 1
    assert model.modes == ["eval", "train"] and model.training  # training mode restored
    assert tokenizer.padding_side == "right"  # restored
    direct = generate_greedy(model, tokenizer, [cb.prompts[1]], stop_strings=("<|im_end|>",))
    assert direct == ["beta"]
