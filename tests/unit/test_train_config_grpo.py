"""GRPO and packing settings: strict validation with file:line errors, reward specs, TRL arguments."""

from __future__ import annotations

import hashlib
import inspect

import pytest

from provenir.core.config import RewardConfig, RunConfig, TrainingConfig, config_hash
from provenir.core.errors import ConfigError


def _load(tmp_path, body: str) -> RunConfig:
    path = tmp_path / "run.yaml"
    path.write_text(body)
    return RunConfig.from_yaml(path)


GRPO = """\
name: g
backend: trl
training:
  method: grpo
  num_generations: 4
  beta: 0.02
  max_completion_length: 16
  temperature: 0.7
  rewards:
    - exact_match
    - {name: format, weight: 0.5, args: {pattern: '^\\d+$', full_match: true}}
    - {name: judge, args: {judge: stub, criteria: [relevance]}}
    - {name: "mypkg.rewards:length_penalty", weight: -0.1, args: {limit: 8}}
"""


def test_a_grpo_config_loads_with_every_kind_of_reward(tmp_path):
    config = _load(tmp_path, GRPO)
    t = config.training
    assert (t.method, t.num_generations, t.beta, t.max_completion_length, t.temperature) == ("grpo", 4, 0.02, 16, 0.7)
    assert [r.name for r in t.rewards] == ["exact_match", "format", "judge", "mypkg.rewards:length_penalty"]
    assert t.rewards[0] == RewardConfig(name="exact_match")  # a bare name: weight 1, reference output
    assert t.rewards[1].args == {"pattern": r"^\d+$", "full_match": True} and t.rewards[1].weight == 0.5
    assert t.rewards[3].weight == -0.1 and t.rewards[3].args == {"limit": 8}
    # the GRPO settings change what a run computes: they are in the config hash
    other = config.model_copy(update={"training": t.model_copy(update={"temperature": 1.0})})
    assert config_hash(config) != config_hash(other)


def test_defaults_keep_sft_and_dpo_as_they_were():
    t = TrainingConfig()
    assert (t.method, t.packing, t.rewards, t.num_generations, t.beta) == ("sft", False, [], 4, 0.0)
    assert (t.max_completion_length, t.temperature, t.dpo_beta) == (64, 1.0, 0.1)
    assert TrainingConfig(method="dpo").method == "dpo"


@pytest.mark.parametrize(
    ("training", "line", "message"),
    [
        ("  method: grpo\n", 3, "training.rewards: method: grpo needs at least one reward"),
        ("  method: grpo\n  num_generations: 1\n  rewards: [exact_match]\n", 5, "training.num_generations: must be >= 2"),
        ("  method: grpo\n  rewards: [exact_matc]\n", 5, "unknown reward 'exact_matc'; did you mean 'exact_match'?"),
        ("  method: grpo\n  rewards:\n    - {name: format}\n", 6, "reward 'format' needs args.pattern"),
        ("  method: grpo\n  rewards:\n    - {name: format, args: {pattern: '('}}\n", 6, "invalid regular expression"),
        ("  method: grpo\n  rewards:\n    - {name: exact_match, args: {normalise: false}}\n", 6,
         "reward 'exact_match' takes normalize; unknown: normalise"),
        ("  method: grpo\n  rewards:\n    - {name: judge, args: {judge: openai}}\n", 6, "the openai judge needs the model"),
        ("  method: grpo\n  rewards:\n    - {nam: exact_match}\n", 6, "allowed keys here: args, name, reference_field, weight"),
        ("  method: grpo\n  rewards:\n    - {name: exact_match, weight: 0}\n", 5, "every reward's weight is 0"),
        ("  method: grpo\n  temperature: 0\n  rewards: [exact_match]\n", 5, "training.temperature: must be > 0"),
        ("  method: grpo\n  beta: -1\n  rewards: [exact_match]\n", 5, "training.beta: must be >= 0"),
        ("  method: dpo\n  packing: true\n", 5, "packing is for method: sft"),
        ("  method: grpo\n  packing: true\n  rewards: [exact_match]\n", 5, "packing is for method: sft"),
    ],
)
def test_bad_grpo_and_packing_settings_name_the_line(tmp_path, training, line, message):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, f"name: g\nbackend: trl\ntraining:\n{training}")
    assert f"run.yaml:{line}:" in str(err.value)
    assert message in str(err.value)


def test_reward_functions_are_built_and_described_for_the_manifest():
    from provenir.rewards import FormatReward, build_rewards, describe_rewards
    from provenir.rewards.functions import JudgeReward

    specs = [r.model_dump() for r in _grpo_rewards()]
    exact, fmt, fmt2, judge = build_rewards(specs)
    assert exact(prompts=["p", "p"], completions=["42", "41"], answer=["42", "42"]) == [1.0, 0.0]
    assert fmt(prompts=["p"], completions=["123"], answer=["x"]) == [1.0]
    assert isinstance(judge, JudgeReward) and len(judge(prompts=["Name Paris."], completions=["Paris."])) == 1
    described = describe_rewards(specs)
    # two rewards of one kind log under distinct names
    assert [d["name"] for d in described] == ["exact_match", "format", "format_2", "judge"]
    assert described[1]["source"] == "provenir.rewards.primitives:FormatReward"
    source = inspect.getsource(FormatReward)
    assert described[1]["code_sha256"] == hashlib.sha256(source.encode()).hexdigest()
    assert described[1]["spec"]["args"] == {"pattern": r"^\d+$"}
    assert described[3]["source"] == "provenir.eval.judge:StubJudge"


def _grpo_rewards() -> list[RewardConfig]:
    return TrainingConfig(
        method="grpo",
        rewards=[{"name": "exact_match", "reference_field": "answer"},
                 {"name": "format", "args": {"pattern": r"^\d+$"}}, {"name": "format", "args": {"pattern": "x"}},
                 {"name": "judge"}],
    ).rewards


def test_a_user_function_reward_is_imported_bound_and_hashed(tmp_path, monkeypatch):
    from provenir.rewards import build_rewards, describe_rewards

    (tmp_path / "my_rewards_mod.py").write_text(
        "def short(prompts, completions, limit=3, **kwargs):\n"
        "    return [float(len(c) <= limit) for c in completions]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    spec = {"name": "my_rewards_mod:short", "weight": 1.0, "reference_field": "output", "args": {"limit": 2}}
    [fn] = build_rewards([spec])
    assert fn.__name__ == "short"
    assert fn(prompts=["p", "p"], completions=["ab", "abc"]) == [1.0, 0.0]
    [described] = describe_rewards([spec])
    expected = hashlib.sha256((tmp_path / "my_rewards_mod.py").read_bytes()).hexdigest()
    assert described["code_sha256"] == expected  # the function is the whole module here
    assert described["source"] == "my_rewards_mod:short"
    with pytest.raises(ConfigError, match=r"training.rewards\[0\].*cannot import module 'no_such_mod'"):
        build_rewards([{**spec, "name": "no_such_mod:f"}])
    with pytest.raises(ConfigError, match="has no 'nope'"):
        build_rewards([{**spec, "name": "my_rewards_mod:nope"}])


def test_grpo_trainer_arguments_come_from_the_config():
    from provenir.train.backends._trl.grpo import grpo_arguments, step_seed

    cfg = {"grpo": {"num_generations": 4, "beta": 0.1, "max_completion_length": 8, "temperature": 0.5,
                    "rewards": [{"name": "exact_match", "weight": 2.0}, {"name": "contains"}]}}
    args = grpo_arguments(cfg, {"max_length": 64, "seed": 3, "learning_rate": 1e-3})
    assert "max_length" not in args and args["seed"] == 3
    assert (args["num_generations"], args["beta"], args["max_completion_length"], args["temperature"]) == (4, 0.1, 8, 0.5)
    assert args["reward_weights"] == [2.0, 1.0]
    # per-step seeds: a function of (seed, step, rank) only, different for each
    seeds = {step_seed(0, s, r) for s in range(5) for r in range(2)}
    assert len(seeds) == 10 and step_seed(0, 3, 1) == step_seed(0, 3, 1) != step_seed(1, 3, 1)
    assert all(0 <= s < 2**63 for s in seeds)


def test_grpo_batch_must_hold_whole_groups(tmp_path):
    from provenir.train.backends.trl import check_method

    config = RunConfig(name="g", backend="trl", batch_size=6,
                       training={"method": "grpo", "num_generations": 4, "rewards": ["exact_match"]})
    with pytest.raises(ConfigError, match="batch_size: 6 completions .* not a multiple of training.num_generations"):
        check_method("grpo", config)
    check_method("grpo", config.model_copy(update={"batch_size": 8}))


def test_packed_rows_batch_with_restarting_positions_and_no_attention_mask():
    from provenir.train.backends._trl.sft import pack_rows, packed_collator

    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4, 5], "labels": [4, 5]},
            {"input_ids": [6, 7, 8, 9], "labels": [-100, -100, 8, 9]}]
    packed = pack_rows(rows, max_length=5)
    assert sorted(n for r in packed for n in r["seq_lengths"]) == [2, 3, 4] and all(len(r["input_ids"]) <= 5 for r in packed)
    batch = packed_collator(pad_token_id=0)(packed)
    assert "attention_mask" not in batch
    first = batch["input_ids"].tolist()[0]
    assert len(batch["input_ids"]) == 2 and sorted(t for r in packed for t in r["input_ids"]) == list(range(1, 10))
    for ids, positions, labels, row in zip(batch["input_ids"], batch["position_ids"], batch["labels"], packed):
        expected = sum((list(range(n)) for n in row["seq_lengths"]), [])
        assert positions.tolist()[: len(expected)] == expected
        assert all(p == 0 for p in positions.tolist()[len(expected):])  # padding restarts on every token
        assert all(label == -100 for label, p in zip(labels.tolist(), positions.tolist()) if p == 0)
    assert first  # a row holds real tokens


def test_vllm_generation_maps_onto_trls_vllm_arguments(tmp_path):
    from provenir.train.backends._trl.grpo import generation_arguments, grpo_arguments

    config = _load(tmp_path, """\
name: g
backend: trl
training:
  method: grpo
  rewards: [exact_match]
  generation:
    backend: vllm
    gpu_memory_utilization: 0.5
    tensor_parallel_size: 2
    max_model_length: 1024
    enable_sleep_mode: true
""")
    generation = config.training.generation.model_dump()
    assert generation_arguments(generation) == {
        "use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.5,
        "vllm_tensor_parallel_size": 2, "vllm_max_model_length": 1024, "vllm_enable_sleep_mode": True,
    }
    server = {**generation, "mode": "server", "server_base_url": "http://vllm:8000"}
    assert generation_arguments(server)["vllm_server_base_url"] == "http://vllm:8000"
    assert generation_arguments(server)["vllm_mode"] == "server"
    assert generation_arguments(TrainingConfig().generation.model_dump()) == {}  # hf: TRL's generate
    # the whole mapping is accepted by TRL's own GRPOConfig (vLLM itself is only needed to train)
    import dataclasses

    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig)}
    cfg = {"grpo": {"num_generations": 4, "beta": 0.0, "max_completion_length": 8, "temperature": 1.0,
                    "rewards": [{"name": "exact_match"}], "generation": server}}
    assert set(grpo_arguments(cfg, {})) <= fields


@pytest.mark.parametrize(
    ("generation", "message"),
    [
        ("    backend: vllm\n    mode: server\n", "mode: server needs server_base_url"),
        ("    backend: vllm\n    gpu_memory_utilization: 1.5\n", "must be in (0, 1]"),
        ("    backend: vlm\n", "unknown generation backend 'vlm'; allowed: hf, vllm"),
        ("    backend: vllm\n    server_base_url: vllm:8000\n", "must be an http:// or https:// URL"),
    ],
)
def test_bad_generation_settings_name_the_line(tmp_path, generation, message):
    body = f"name: g\nbackend: trl\ntraining:\n  method: grpo\n  rewards: [exact_match]\n  generation:\n{generation}"
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, body)
    assert message in str(err.value) and "run.yaml:" in str(err.value)


def test_vllm_generation_is_for_grpo_and_needs_vllm_and_gpus(tmp_path, monkeypatch):
    import importlib.util

    from provenir.core.errors import DependencyError
    from provenir.train.backends.trl import check_generation

    with pytest.raises(ValueError, match="for method: grpo"):  # pydantic's ValidationError
        RunConfig(name="g", training={"generation": {"backend": "vllm"}})
    config = RunConfig(name="g", backend="trl", distributed={"strategy": "none", "use_gpu": False},
                       training={"method": "grpo", "rewards": ["exact_match"], "generation": {"backend": "vllm"}})
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real_find_spec(name, *a))
    with pytest.raises(DependencyError, match=r"pip install 'provenir\[vllm\]'"):
        check_generation(config)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match="runs on CUDA GPUs and this run trains on CPUs"):
        check_generation(config)
    check_generation(config.model_copy(update={"distributed": None}).model_copy(
        update={"training": config.training.model_copy(update={"generation": TrainingConfig().generation})}))


def test_the_config_knows_the_primitives_the_rewards_package_builds():
    """Core validates reward names and arguments without importing provenir.rewards: its table must
    be the package's (names, and each primitive's constructor arguments)."""
    from provenir.core.config import REWARD_ARGS, REWARDS_WITH_REFERENCE
    from provenir.rewards.functions import REWARD_PRIMITIVES

    assert set(REWARD_ARGS) == {*REWARD_PRIMITIVES, "judge"}
    for name, cls in REWARD_PRIMITIVES.items():
        params = [p for p in inspect.signature(cls).parameters if p != "flags"]
        assert sorted(params) == sorted(REWARD_ARGS[name]), name
    assert set(REWARDS_WITH_REFERENCE) == set(REWARD_PRIMITIVES) - {"format"}
