"""RunConfig: contract defaults, YAML loading, and every error path with file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenir.core.config import (
    NON_SEMANTIC_FIELDS,
    DistributedConfig,
    PEFTConfig,
    RunConfig,
    config_hash,
    semantic_config,
)
from provenir.core.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_contract_defaults():
    cfg = RunConfig(name="x")
    assert (cfg.backend, cfg.seed, cfg.deterministic, cfg.output_dir) == ("stub", 42, True, "artifacts")
    assert (cfg.model_name_or_path, cfg.max_steps, cfg.batch_size) == (None, 1000, 8)
    assert cfg.peft is None and cfg.distributed is None
    assert (cfg.observability_backend, cfg.observability_project) == ("none", None)
    peft = PEFTConfig()
    assert (peft.rank, peft.alpha, peft.target_modules, peft.dropout) == (8, 16.0, ["q_proj", "v_proj"], 0.05)
    assert (peft.load_in_4bit, peft.load_in_8bit, peft.use_rslora) == (False, False, False)
    dist = DistributedConfig()
    assert (dist.strategy, dist.num_gpus, dist.num_nodes, dist.deepspeed_stage) == ("none", 1, 1, 2)
    assert DistributedConfig(num_gpus=4, num_nodes=2).num_workers == 8


def test_from_yaml_full(tmp_path):
    (tmp_path / "data").mkdir()
    path = write(
        tmp_path,
        """
name: full
backend: trl
seed: 7
peft: {rank: 16, alpha: 32, use_rslora: true}
distributed: {strategy: deepspeed, num_gpus: 2, deepspeed_stage: 3}
data: {train_path: data/train.jsonl, template: chatml, fields: {instruction: q}}
training: {learning_rate: 0.001, lr_scheduler: cosine}
""",
    )
    cfg = RunConfig.from_yaml(path)
    assert cfg.peft.rank == 16 and cfg.peft.use_rslora
    assert cfg.distributed.strategy == "deepspeed" and cfg.distributed.deepspeed_stage == 3
    assert cfg.data.train_path == str((tmp_path / "data" / "train.jsonl").resolve())
    assert cfg.data.fields == {"instruction": "q"}
    assert cfg.training.lr_scheduler == "cosine"


def test_overrides_apply_after_yaml(tmp_path):
    path = write(tmp_path, "name: o\npeft: {rank: 4}\n")
    cfg = RunConfig.from_yaml(path, overrides={"peft.rank": 32, "training.learning_rate": 0.5})
    assert cfg.peft.rank == 32 and cfg.training.learning_rate == 0.5


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [
        ("name: a\nbackend: torchtune\n", 2, "backend", "unknown backend 'torchtune'; allowed: stub, trl"),
        ("name: a\npeft:\n  rank: 0\n", 3, "peft.rank", "must be >= 1 (got 0)"),
        ("name: a\npeft:\n  load_in_4bit: true\n  load_in_8bit: true\n", 4, "peft.load_in_8bit", "exclusive"),
        ("name: a\ndistributed:\n  deepspeed_stage: 4\n", 3, "distributed.deepspeed_stage", "1, 2 or 3"),
        ("name: a\ndistributed:\n  strategy: horovod\n", 3, "distributed.strategy", "allowed: none, ddp, fsdp, deepspeed"),
        ("name: a\nobservability_backend: comet\n", 2, "observability_backend", "allowed: none, wandb, mlflow, tensorboard"),
        ("name: a\nseed: -1\n", 2, "seed", "[0, 2**32)"),
        ("name: a\nmax_steps: abc\n", 2, "max_steps", "valid integer"),
        ("name: a\nbatch_size: 0\n", 2, "batch_size", "must be >= 1"),
        ("name: a\npeft:\n  dropout: 1.5\n", 3, "peft.dropout", "[0, 1)"),
        ("name: a\npeft:\n  target_modules: []\n", 3, "peft.target_modules", "at least one module"),
        ("name: a\ntraining:\n  lr_scheduler: warmup\n", 3, "training.lr_scheduler", "unknown lr_scheduler"),
        ("name: a\ntraining:\n  learning_rate: 0\n", 3, "training.learning_rate", "must be > 0"),
        ("name: a\ntraining:\n  method: ppo\n", 3, "training.method", "allowed: sft, dpo"),
        ("name: a\ndistributed:\n  num_gpus: 0\n", 3, "distributed.num_gpus", "must be >= 1"),
    ],
)
def test_bad_values_name_file_line_key_and_allowed(tmp_path, text, line, key, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: {key}: "), message
    assert fragment in message


def test_unknown_key_lists_allowed_keys(tmp_path):
    path = write(tmp_path, "name: a\npeft:\n  rank: 4\n  rnak: 8\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path)
    message = str(info.value)
    assert message.startswith(f"{path}:4: peft.rnak: unknown key")
    assert "alpha" in message and "rank" in message


def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "name: a\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r":2: learning_rate: unknown key; allowed keys here: .*training"):
        RunConfig.from_yaml(path)


def test_missing_name(tmp_path):
    path = write(tmp_path, "backend: stub\n")
    with pytest.raises(ConfigError, match="name: required key is missing"):
        RunConfig.from_yaml(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "config file is empty"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("name: [unclosed\n", "invalid YAML"),
        ("name: !!python/object/apply:os.system ['true']\n", "invalid YAML"),  # safe_load only
    ],
)
def test_unparseable_files(tmp_path, text, fragment):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=fragment):
        RunConfig.from_yaml(path)


def test_missing_file_and_non_utf8(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        RunConfig.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        RunConfig.from_yaml(bad)


def test_bad_override_path(tmp_path):
    path = write(tmp_path, "name: a\nbackend: stub\n")
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path, overrides={"backend.x": 1})
    assert str(info.value) == f"--set backend.x=1: backend is not a section (set to 'stub' on {path}:2)"


def test_assignment_is_validated():
    cfg = RunConfig(name="a")
    with pytest.raises(ValueError):
        cfg.backend = "nope"


def test_config_hash_ignores_non_semantic_fields():
    a = RunConfig(name="a", output_dir="x", observability_backend="none")
    b = RunConfig(name="b", output_dir="y", storage_root="memory://z", observability_project="p")
    assert config_hash(a) == config_hash(b)
    assert config_hash(a) != config_hash(RunConfig(name="a", seed=43))
    assert config_hash(a) != config_hash(RunConfig(name="a", peft=PEFTConfig()))
    semantic = semantic_config(a)
    for dotted in NON_SEMANTIC_FIELDS:
        node = semantic
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node[part]
        assert leaf not in node


def test_config_hash_same_from_dict_and_model():
    cfg = RunConfig(name="a", peft=PEFTConfig(rank=4))
    assert config_hash(cfg) == config_hash(cfg.model_dump(mode="json"))
    assert config_hash({"name": "a", "peft": {"rank": 4}}) == config_hash(cfg)


def test_to_yaml_round_trips(tmp_path):
    cfg = RunConfig(name="rt", peft=PEFTConfig(rank=4), distributed=DistributedConfig(strategy="ddp"))
    path = write(tmp_path, cfg.to_yaml())
    assert RunConfig.from_yaml(path) == cfg


def test_duplicate_keys_are_rejected_with_both_lines(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\npeft:\n  rank: 4\n  alpha: 8\n  rank: 16\nseed: 1\n")
    with pytest.raises(ConfigError) as err:
        RunConfig.from_yaml(path)
    message = str(err.value)
    assert f"{path}:5:" in message and "'peft.rank'" in message and "line 3" in message


def test_same_key_in_different_mappings_is_fine(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("name: a\nseed: 3\npeft:\n  rank: 4\ndistributed:\n  num_gpus: 1\n")
    assert RunConfig.from_yaml(path).peft.rank == 4
