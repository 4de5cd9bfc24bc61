"""GRPO on the tiny model with the trl backend: it learns a rule-checkable task, runs are
bit-identical, a stopped run resumes to the same bytes, the manifest records rewards and prompts."""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path

import pytest

from provenir.core.config import DataConfig, PEFTConfig, RunConfig, TrainingConfig
from provenir.core.hashing import sha256_file
from provenir.core.run import verify_run
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.train.backends import get_backend
from provenir.train.backends.trl import CHECKPOINT_DIR

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

PROMPTS = [{"instruction": f"Say a number after {i:03d}", "output": f"{i + 1:03d}"} for i in range(40)]
WEIGHTS = "adapter/adapter_model.safetensors"

USER_REWARDS = '''\
def digit_share(prompts, completions, bonus=0.0, **columns):
    """The share of digits in each completion (plus a bonus), a dense reward for the tests."""
    return [bonus + sum(ch.isdigit() for ch in text) / max(1, len(text)) for text in completions]
'''


@pytest.fixture()
def user_rewards(tmp_path, monkeypatch):
    """A reward module of the user's, importable as ``grpo_user_rewards``."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "grpo_user_rewards.py").write_text(USER_REWARDS)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("grpo_user_rewards", None)


def _config(model: Path, seed: int = 3, **training) -> RunConfig:
    training = {
        "method": "grpo", "learning_rate": 5e-3, "logging_steps": 1, "num_epochs": 10, "num_generations": 2,
        "max_completion_length": 4, "save_steps": 2,
        "rewards": [{"name": "exact_match"}, {"name": "grpo_user_rewards:digit_share", "weight": 0.5,
                                               "args": {"bonus": 0.1}}],
        **training,
    }
    return RunConfig(
        name="tiny-grpo", backend="trl", seed=seed, model_name_or_path=str(model), max_steps=4, batch_size=4,
        data=DataConfig(template="chatml"),
        peft=PEFTConfig(rank=4, alpha=8, dropout=0.1, target_modules=["all-linear"]),
        training=TrainingConfig(**training),
    )


class _Steps:
    """Records the optimizer steps a run takes and the rewards it logs."""

    def __init__(self, stop_at: int | None = None):
        from transformers import TrainerCallback

        outer = self
        self.steps: list[int] = []
        self.rewards: list[float] = []

        class _CB(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                outer.steps.append(state.global_step)

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "reward" in logs:
                    outer.rewards.append(float(logs["reward"]))

            def on_save(self, args, state, control, **kwargs):
                if stop_at is not None and state.global_step == stop_at:
                    raise KeyboardInterrupt

        self.callback = _CB()


def test_grpo_runs_are_bit_identical_resume_to_the_same_bytes_and_record_rewards(
    tiny_model_dir, store_root, user_rewards
):
    backend = get_backend("trl")
    store = ArtifactStore(store_root)
    data = JsonlDataset.from_records(PROMPTS)
    config = _config(tiny_model_dir)

    straight = backend.train_grpo(config, data, store=store)
    again = backend.train_sft(config, data, store=store)  # a grpo config through train_sft: GRPO too
    other_seed = backend.train_grpo(_config(tiny_model_dir, seed=4), data, store=store)
    assert straight.metrics["steps"] == 4
    assert straight.manifest.artifacts[WEIGHTS] == again.manifest.artifacts[WEIGHTS]
    assert straight.manifest.artifacts[WEIGHTS] != other_seed.manifest.artifacts[WEIGHTS]
    assert verify_run(store, straight.manifest.run_id).ok

    # the manifest: each reward with its spec and code hash, and the prompt set's hash
    inputs = straight.manifest.inputs
    exact, user = inputs["rewards"]["functions"]
    assert exact["name"] == "exact_match" and exact["source"] == "provenir.rewards.primitives:ExactMatchReward"
    assert user["name"] == "digit_share" and user["source"] == "grpo_user_rewards:digit_share"
    assert user["spec"] == {"name": "grpo_user_rewards:digit_share", "weight": 0.5, "reference_field": "output",
                            "args": {"bonus": 0.1}}
    import grpo_user_rewards

    source = inspect.getsource(grpo_user_rewards.digit_share)
    assert user["code_sha256"] == hashlib.sha256(source.encode()).hexdigest()
    assert inputs["prompts"]["records"] == len(PROMPTS) and len(inputs["prompts"]["sha256"]) == 64
    assert other_seed.manifest.inputs["prompts"] == inputs["prompts"]
    fewer = backend.train_grpo(config.model_copy(update={"max_steps": 1}), JsonlDataset.from_records(PROMPTS[:8]),
                               store=store)
    assert fewer.manifest.inputs["prompts"]["sha256"] != inputs["prompts"]["sha256"]
    assert straight.manifest.config["training"]["method"] == "grpo"
    # every logged step carries both rewards' means and the weighted total
    assert straight.metrics["reward_mean_first"] > 0  # the user reward's bonus alone gives 0.05

    # stopped after the checkpoint at step 2, then resumed: steps 3 and 4 only, the same bytes
    stop = _Steps(stop_at=2)
    with pytest.raises(KeyboardInterrupt):
        backend.train_grpo(config, data, store=store, callbacks=[stop.callback])
    assert stop.steps == [1, 2]
    known = {straight.manifest.run_id, again.manifest.run_id, other_seed.manifest.run_id, fewer.manifest.run_id}
    [stopped_id] = [r for r in store.list_runs() if r not in known]
    assert store.load_manifest(stopped_id).status == "stopped"
    assert (Path(store.local_run_dir(stopped_id)) / CHECKPOINT_DIR / "hf" / "checkpoint-2").is_dir()
    resumed_steps = _Steps()
    resumed = backend.train_grpo(config, data, store=store, resume_run_id=stopped_id,
                                 callbacks=[resumed_steps.callback])
    assert resumed_steps.steps == [3, 4]
    assert resumed.manifest.run_id == stopped_id and resumed.metrics["resumed_from_step"] == 2
    assert sha256_file(Path(resumed.adapter_path) / "adapter_model.safetensors") == straight.manifest.artifacts[WEIGHTS]
    assert verify_run(store, stopped_id).ok


def test_grpo_bad_input_fails_before_any_run_is_recorded(tiny_model_dir, store_root, user_rewards):
    from provenir.core.errors import ConfigError, DataError

    backend = get_backend("trl")
    store = ArtifactStore(store_root)
    data = JsonlDataset.from_records(PROMPTS)
    with pytest.raises(ConfigError, match="not a multiple of training.num_generations"):
        backend.train_grpo(_config(tiny_model_dir, num_generations=3), data, store=store)
    with pytest.raises(DataError, match="record 2: a reward compares with the 'output' column"):
        backend.train_grpo(_config(tiny_model_dir), JsonlDataset.from_records(
            [PROMPTS[0], {"instruction": "no answer here"}]), store=store)
    missing = _config(tiny_model_dir, rewards=[{"name": "grpo_user_rewards:nope"}])
    with pytest.raises(ConfigError, match="has no 'nope'"):
        backend.train_grpo(missing, data, store=store)
    assert store.list_runs() == []


LEARN_YAML = """\
name: grpo-leading-space
backend: trl
seed: 0
model_name_or_path: {model}
max_steps: 40
batch_size: 8
data:
  train_path: prompts.jsonl
  template: chatml
training:
  method: grpo
  learning_rate: 0.01
  lr_scheduler: constant
  num_epochs: 100
  logging_steps: 1
  num_generations: 4
  max_completion_length: 4
  temperature: 1.0
  rewards:
    - {{name: format, args: {{pattern: '^ '}}}}   # the completion starts with a space
"""


@pytest.mark.slow
def test_the_tiny_model_learns_a_format_rule_with_grpo(tiny_model_dir, store_root, tmp_path):
    """``provenir train``'s path (run_job on a YAML config): the reward mean rises over the run.

    All weights train here: the random two-layer model's logits are near-uniform, and LoRA on its
    hidden layers alone barely moves what it samples within a test's budget (greedy decoding
    learns from LoRA, sampling at temperature 1 needs the output layer too)."""
    from provenir.pipeline import run_job

    JsonlDataset.from_records(PROMPTS).save(tmp_path / "prompts.jsonl")
    (tmp_path / "grpo.yaml").write_text(LEARN_YAML.format(model=tiny_model_dir))
    config = RunConfig.from_yaml(tmp_path / "grpo.yaml")
    steps = _Steps()
    job = run_job(config, store=ArtifactStore(store_root), extra={"callbacks": [steps.callback]})
    assert job.verification.ok and job.training.metrics["steps"] == 40
    rewards = steps.rewards
    assert len(rewards) == 40
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    assert last >= first + 0.3, (first, last, rewards)
    assert job.training.metrics["reward_mean_first"] == pytest.approx(first)
    assert job.training.metrics["reward_mean_last"] == pytest.approx(last)
    functions = job.training.manifest.inputs["rewards"]["functions"]
    assert [f["name"] for f in functions] == ["format"] and functions[0]["spec"]["args"] == {"pattern": "^ "}


@pytest.mark.slow
def test_grpo_on_two_ray_ddp_workers_is_bit_identical(tiny_model_dir, store_root, ray_local):
    """The same GRPO loop on a Ray Train group of two CPU workers (gloo DDP): twice the same bytes."""
    from provenir.core.config import DistributedConfig

    rewards = [{"name": "format", "args": {"pattern": "^ "}}, {"name": "judge", "weight": 0.5}]
    config = _config(tiny_model_dir, rewards=rewards, save_steps=0).model_copy(
        update={"distributed": DistributedConfig(strategy="ddp", num_gpus=2, use_gpu=False)}
    )
    store = ArtifactStore(store_root)
    data = JsonlDataset.from_records(PROMPTS)
    first = get_backend("trl").train_grpo(config, data, store=store)
    second = get_backend("trl").train_grpo(config, data, store=store)
    assert first.metrics["steps"] == 4
    assert first.manifest.artifacts[WEIGHTS] == second.manifest.artifacts[WEIGHTS]
    local = get_backend("trl").train_grpo(config.model_copy(update={"distributed": None}), data, store=store)
    assert local.manifest.artifacts[WEIGHTS] != first.manifest.artifacts[WEIGHTS]  # other ranks, other samples
    assert [f["name"] for f in first.manifest.inputs["rewards"]["functions"]] == ["format", "judge"]
    assert verify_run(store, first.manifest.run_id).ok


@pytest.mark.gpu
@pytest.mark.slow
def test_grpo_rollouts_with_vllm_on_a_gpu(tiny_model_dir, store_root):
    """vLLM generates the completions (colocated with training on one GPU). Run it on a CUDA
    machine with vLLM installed:

        pip install 'provenir[train,vllm]'
        pytest -m gpu tests/integration/test_train_grpo.py -k vllm
    """
    pytest.importorskip("vllm")
    from provenir.core.config import DistributedConfig

    config = _config(tiny_model_dir, rewards=[{"name": "format", "args": {"pattern": "^ "}}], save_steps=0,
                     generation={"backend": "vllm", "gpu_memory_utilization": 0.2})
    config = config.model_copy(update={"distributed": DistributedConfig(strategy="none", use_gpu=True)})
    result = get_backend("trl").train_grpo(config, JsonlDataset.from_records(PROMPTS), store=ArtifactStore(store_root))
    assert result.metrics["steps"] == 4 and result.manifest.status == "completed"
    assert result.manifest.config["training"]["generation"]["backend"] == "vllm"
    assert verify_run(ArtifactStore(store_root), result.manifest.run_id).ok


def test_provenir_train_runs_a_grpo_config_and_names_a_bad_reward_line(tiny_model_dir, tmp_path):
    import json
    import subprocess

    JsonlDataset.from_records(PROMPTS[:8]).save(tmp_path / "prompts.jsonl")
    text = LEARN_YAML.format(model=tiny_model_dir).replace("max_steps: 40", "max_steps: 2")
    (tmp_path / "grpo.yaml").write_text(text)

    def provenir(*args):
        return subprocess.run([sys.executable, "-m", "provenir.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    out = provenir("train", "grpo.yaml", "--store", "store", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    payload = json.loads(out.stdout)
    manifest = payload["manifest"]
    assert payload["verification"]["ok"] and manifest["metrics"]["steps"] == 2
    assert manifest["config"]["training"]["method"] == "grpo"
    assert [f["name"] for f in manifest["inputs"]["rewards"]["functions"]] == ["format"]
    assert manifest["inputs"]["prompts"]["records"] == 8

    (tmp_path / "bad.yaml").write_text(text.replace("{name: format,", "{name: formt,"))
    bad = provenir("train", "bad.yaml", "--store", "store")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    line = text.splitlines().index(next(t for t in text.splitlines() if "name: format" in t)) + 1
    assert f"bad.yaml:{line}: training.rewards.0.name: unknown reward 'formt'" in " ".join(bad.stderr.split())
