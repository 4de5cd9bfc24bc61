"""Run configuration: strict pydantic models, parsed once at the edge (CLI, API, YAML).

Every model forbids unknown keys. :meth:`RunConfig.from_yaml` loads YAML with
:func:`provenir.core.yaml_safe.load_yaml` (safe constructors; size, depth and alias limits) and
turns any validation failure into one :class:`ConfigError` naming the file, the key path, the YAML
line, the bad value and what is allowed::

    examples/bad.yaml:7: peft.rank: must be >= 1 (got 0)

Precedence is one chain: field defaults, then the YAML file, then overrides (CLI flags) passed to
:meth:`RunConfig.from_yaml` as dotted keys. An error caused by an override names the override
instead of a line of the file::

    --set peft.rnk=3: peft.rnk: unknown key; allowed keys here: alpha, dropout, …

Relative input paths (``data.train_path``, ``data.eval_path``, a local ``model_name_or_path``)
written in the file resolve against the file's folder; given as overrides, against the current
working directory. Output locations (``output_dir``, ``storage_root``, ``governance.audit_dir``)
are always relative to the current working directory, like ``--store`` and ``$PROVENIR_STORE``.

``config_hash`` (see :func:`semantic_config`) covers everything that can change what a run
computes. The fields in :data:`NON_SEMANTIC_FIELDS` are excluded: where outputs go, what the run
is called, where metrics are sent, and the data *paths* (the data's content is hashed separately
into ``dataset_hash``).
"""

from __future__ import annotations

import difflib
import math
import re
import reprlib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from provenir.core.errors import ConfigError
from provenir.core.template_names import template_names
from provenir.core.yaml_safe import compose_yaml, load_yaml, read_yaml_text

BACKENDS: tuple[str, ...] = ("stub", "trl")
STRATEGIES: tuple[str, ...] = ("none", "ddp", "fsdp", "deepspeed")
OBSERVABILITY_BACKENDS: tuple[str, ...] = ("none", "wandb", "mlflow", "tensorboard")
LR_SCHEDULERS: tuple[str, ...] = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
TRAINING_METHODS: tuple[str, ...] = ("sft", "dpo", "grpo")
#: the reward primitives a GRPO config names (:mod:`provenir.rewards` registers them under these
#: names), with the arguments each takes; ``judge`` scores with an LLM judge's rubric
REWARD_ARGS: dict[str, tuple[str, ...]] = {
    "exact_match": ("normalize",),
    "contains": (),
    "token_f1": (),
    "format": ("pattern", "full_match"),
    "judge": ("judge", "model", "base_url", "criteria", "cache_dir"),
}
GENERATION_BACKENDS: tuple[str, ...] = ("hf", "vllm")
VLLM_MODES: tuple[str, ...] = ("colocate", "server")
#: rewards that compare the completion with a reference column of the record
REWARDS_WITH_REFERENCE: tuple[str, ...] = ("exact_match", "contains", "token_f1")
PII_ACTIONS: tuple[str, ...] = ("off", "scan", "mask")
PII_REPLACEMENTS: tuple[str, ...] = ("placeholder", "pseudonym")
SECRET_ACTIONS: tuple[str, ...] = ("off", "warn", "block")
DECONTAMINATION_MODES: tuple[str, ...] = ("off", "ngram", "semantic")

#: Dotted key paths left out of ``config_hash``: they change where results go or how the run is
#: named and watched, never what it computes. Data paths are excluded because the data's content is
#: hashed into ``dataset_hash``.
NON_SEMANTIC_FIELDS: tuple[str, ...] = (
    "name",
    "output_dir",
    "storage_root",
    "observability_backend",
    "observability_project",
    "data.train_path",
    "data.eval_path",
    "governance.audit",
    "governance.audit_dir",
)


def _one_of(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
    return value


def _false_is_off(value: Any) -> Any:
    """YAML 1.1 reads an unquoted ``off`` (and ``no``) as ``False``; for fields whose "disabled"
    value is the string ``"off"``, that is what the user meant."""
    return "off" if value is False else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PEFTConfig(_Strict):
    """LoRA adapter settings (QLoRA with ``load_in_4bit``/``load_in_8bit``, rsLoRA scaling)."""

    rank: int = 8
    alpha: float = 16.0
    target_modules: list[str] = ["q_proj", "v_proj"]
    dropout: float = 0.05
    load_in_4bit: bool = False  # QLoRA
    load_in_8bit: bool = False
    use_rslora: bool = False  # rank-stabilised scaling

    @field_validator("rank")
    @classmethod
    def _rank(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("dropout")
    @classmethod
    def _dropout(cls, v: float) -> float:
        if not 0.0 <= v < 1.0:
            raise ValueError("must be in [0, 1)")
        return v

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str]) -> list[str]:
        if not v or any(not m.strip() for m in v):
            raise ValueError("must name at least one module (e.g. [q_proj, v_proj] or [all-linear])")
        return v

    @field_validator("load_in_8bit")
    @classmethod
    def _one_quantisation(cls, v: bool, info: Any) -> bool:
        if v and info.data.get("load_in_4bit"):
            raise ValueError("load_in_4bit and load_in_8bit are exclusive; set only one")
        return v


class DistributedConfig(_Strict):
    """How training is spread over Ray Train workers (``none`` trains in process)."""

    strategy: str = "none"  # "fsdp" | "deepspeed" | "ddp" | "none"
    num_gpus: int = 1
    num_nodes: int = 1
    deepspeed_stage: int = 2  # 1 | 2 | 3
    use_gpu: bool | None = None  # None: use GPUs when the cluster has them
    max_failures: int = 0  # worker-group restarts from the latest checkpoint

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        return _one_of(v, STRATEGIES, "strategy")

    @field_validator("num_gpus", "num_nodes")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("deepspeed_stage")
    @classmethod
    def _stage(cls, v: int) -> int:
        if v not in (1, 2, 3):
            raise ValueError("must be 1, 2 or 3 (the ZeRO stage)")
        return v

    @field_validator("max_failures")
    @classmethod
    def _failures(cls, v: int) -> int:
        if v < -1:
            raise ValueError("must be >= 0, or -1 for unlimited restarts")
        return v

    @property
    def num_workers(self) -> int:
        """Ray Train workers: one per GPU on every node."""
        return self.num_gpus * self.num_nodes


class DataConfig(_Strict):
    """Where the data comes from and how records become text.

    ``fields`` maps the canonical names a template reads (``instruction``, ``input``, ``output``,
    ``system``, ``messages``, ``text``, ``prompt``, ``chosen``, ``rejected``) to the names the
    records use, e.g. ``{instruction: question, output: answer}``.
    """

    train_path: str | None = None
    eval_path: str | None = None
    template: str = "alpaca"
    fields: dict[str, str] = Field(default_factory=dict)

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a template (e.g. alpaca, chatml, llama3)")
        return v


class GovernanceConfig(_Strict):
    """What the main job does with personal data and secrets before training.

    ``pii``: ``mask`` (default) replaces each finding, ``scan`` only reports, ``off`` skips.
    ``secrets``: ``block`` (default) stops the run when a live secret is found, ``warn`` reports.
    Every decision is written to the audit log (``audit_dir``, default ``<store root>/audit``).
    """

    pii: str = "mask"
    pii_replacement: str = "placeholder"  # or "pseudonym": same value, same salted token
    secrets: str = "block"
    audit: bool = True
    audit_dir: str | None = None

    @field_validator("pii", "secrets", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return _false_is_off(v)

    @field_validator("pii")
    @classmethod
    def _pii(cls, v: str) -> str:
        return _one_of(v, PII_ACTIONS, "pii action")

    @field_validator("pii_replacement")
    @classmethod
    def _replacement(cls, v: str) -> str:
        return _one_of(v, PII_REPLACEMENTS, "pii_replacement")

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: str) -> str:
        return _one_of(v, SECRET_ACTIONS, "secrets action")


class CurationConfig(_Strict):
    """Quality filtering and decontamination of the training set before training.

    ``quality_threshold``: drop records whose quality score is below it (``null``: keep all).
    ``decontamination``: against ``data.eval_path`` — ``ngram`` (13-gram overlap, default),
    ``semantic`` (n-grams, then embedding similarity at ``decontamination_threshold``), or ``off``.
    """

    quality_threshold: float | None = None
    decontamination: str = "ngram"
    decontamination_threshold: float = 0.90

    @field_validator("decontamination", mode="before")
    @classmethod
    def _off(cls, v: Any) -> Any:
        return _false_is_off(v)

    @field_validator("quality_threshold")
    @classmethod
    def _quality(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError("must be in [0, 1] (or null to keep every record)")
        return v

    @field_validator("decontamination")
    @classmethod
    def _mode(cls, v: str) -> str:
        return _one_of(v, DECONTAMINATION_MODES, "decontamination mode")

    @field_validator("decontamination_threshold")
    @classmethod
    def _threshold(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError("must be in (0, 1]")
        return v


class RewardConfig(_Strict):
    """One GRPO reward function, added to the others with its ``weight``.

    ``name`` is a reward primitive (``exact_match``, ``contains``, ``token_f1``, ``format``),
    ``judge`` (the mean of an LLM judge's rubric scores: ``args.judge`` is ``stub``, ``anthropic``
    or ``openai``, cached on disk with ``args.cache_dir``), or ``module:function``: a TRL reward
    function ``f(prompts, completions, **columns) -> list[float]``, a class (built with ``args``)
    or an object with ``score(prediction, reference)``. ``reference_field`` is the record's column
    that reference-based rewards compare with. A bare string in the list means ``{name: ...}``.
    """

    name: str
    weight: float = 1.0
    reference_field: str = "output"
    args: dict[str, Any] = Field(default_factory=dict, validate_default=True)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v in REWARD_ARGS:
            return v
        module, sep, attr = v.partition(":")
        dotted = all(part.isidentifier() for part in module.split(".")) if module else False
        if not sep or not dotted or not attr.replace(".", "_").isidentifier():
            close = difflib.get_close_matches(v, list(REWARD_ARGS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(
                f"unknown reward {v!r}{hint}: name a primitive ({', '.join(REWARD_ARGS)}) or a "
                "function as module:function"
            )
        return v

    @field_validator("weight")
    @classmethod
    def _weight(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("args")
    @classmethod
    def _args(cls, v: dict[str, Any], info: Any) -> dict[str, Any]:
        name = info.data.get("name")
        if name not in REWARD_ARGS:
            return v  # a user function takes whatever it takes
        allowed = REWARD_ARGS[name]
        unknown = sorted(set(v) - set(allowed))
        if unknown:
            takes = f"takes {', '.join(allowed)}" if allowed else "takes no arguments"
            raise ValueError(f"reward {name!r} {takes}; unknown: {', '.join(unknown)}")
        if name == "format" and not isinstance(v.get("pattern"), str):
            raise ValueError("reward 'format' needs args.pattern, a regular expression")
        if name == "format":
            try:
                re.compile(v["pattern"])
            except re.error as exc:
                raise ValueError(f"args.pattern: invalid regular expression: {exc}") from None
        if name == "judge" and v.get("judge", "stub") not in ("stub", "anthropic", "openai"):
            raise ValueError("args.judge: choose stub, anthropic or openai")
        if name == "judge" and v.get("judge", "stub") != "stub" and not v.get("model"):
            raise ValueError(f"args.model: the {v['judge']} judge needs the model's name")
        return v


class GenerationConfig(_Strict):
    """How GRPO generates its completions: ``hf`` (transformers' ``generate`` inside the trainer,
    the default and the CPU path) or ``vllm`` (GPUs; ``pip install 'provenir[vllm]'``).

    With ``vllm``, ``mode: colocate`` runs a vLLM engine in every training process, sharing its
    GPU (``gpu_memory_utilization`` of it); ``mode: server`` sends the prompts to a
    ``trl vllm-serve`` server at ``server_base_url``, which receives the new weights every step.
    """

    backend: str = "hf"  # "hf" | "vllm"
    mode: str = "colocate"  # "colocate" | "server" (vllm only)
    gpu_memory_utilization: float = 0.3
    tensor_parallel_size: int = 1
    max_model_length: int | None = None
    server_base_url: str | None = None
    enable_sleep_mode: bool = False  # colocate: free the engine's memory during the optimizer step

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return _one_of(v, GENERATION_BACKENDS, "generation backend")

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        return _one_of(v, VLLM_MODES, "vllm mode")

    @field_validator("gpu_memory_utilization")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 < v <= 1.0:
            raise ValueError("must be in (0, 1]: the share of the GPU's memory vLLM may take")
        return v

    @field_validator("tensor_parallel_size")
    @classmethod
    def _tp(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("max_model_length")
    @classmethod
    def _length(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be >= 1 (or null: the model's own)")
        return v

    @field_validator("server_base_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL of a trl vllm-serve server")
        return v


class TrainingConfig(_Strict):
    """Optimisation hyper-parameters (the usual transformers/TRL meanings).

    ``packing`` (SFT only) packs short examples into ``max_seq_length`` rows with per-example
    position ids, so packed neighbours never attend to each other. The GRPO fields
    (``method: grpo``): ``num_generations`` completions per prompt (the group), ``beta`` the KL
    coefficient against the base model (0: no reference model), ``max_completion_length`` and
    ``temperature`` for sampling, ``rewards``, the reward functions (see :class:`RewardConfig`),
    and ``generation``, what generates the completions (see :class:`GenerationConfig`).
    """

    method: str = "sft"  # "sft" | "dpo" | "grpo"
    learning_rate: float = 2e-4
    num_epochs: float = 1.0
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 512
    warmup_steps: int = 0
    lr_scheduler: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    completion_only_loss: bool = True
    dpo_beta: float = 0.1
    logging_steps: int = 10
    save_steps: int = 0  # 0: checkpoint only at the end
    packing: bool = False
    num_generations: int = 4
    beta: float = 0.0
    max_completion_length: int = 64
    temperature: float = 1.0
    rewards: list[RewardConfig] = Field(default_factory=list, validate_default=True)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        return _one_of(v, TRAINING_METHODS, "training method")

    @field_validator("lr_scheduler")
    @classmethod
    def _scheduler(cls, v: str) -> str:
        return _one_of(v, LR_SCHEDULERS, "lr_scheduler")

    @field_validator("learning_rate", "num_epochs", "dpo_beta", "temperature")
    @classmethod
    def _gt_zero(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("gradient_accumulation_steps", "max_seq_length", "logging_steps", "max_completion_length")
    @classmethod
    def _ge_one(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("warmup_steps", "save_steps")
    @classmethod
    def _ge_zero_int(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("weight_decay", "max_grad_norm", "beta")
    @classmethod
    def _ge_zero(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be >= 0")
        return v

    @field_validator("packing")
    @classmethod
    def _packing(cls, v: bool, info: Any) -> bool:
        method = info.data.get("method")
        if v and method == "dpo":
            raise ValueError(
                "packing is for method: sft; TRL's DPOTrainer packs nothing (its padding-free mode is "
                "disabled in this TRL), so set packing: false for dpo"
            )
        if v and method == "grpo":
            raise ValueError("packing is for method: sft; GRPO trains on the completions it generates")
        return v

    @field_validator("num_generations")
    @classmethod
    def _group(cls, v: int) -> int:
        if v < 2:
            raise ValueError("must be >= 2: GRPO compares the completions of one prompt with each other")
        return v

    @field_validator("rewards", mode="before")
    @classmethod
    def _bare_names(cls, v: Any) -> Any:
        if isinstance(v, list):
            return [{"name": item} if isinstance(item, str) else item for item in v]
        return v

    @field_validator("rewards")
    @classmethod
    def _rewards(cls, v: list[RewardConfig], info: Any) -> list[RewardConfig]:
        if info.data.get("method") == "grpo" and not v:
            raise ValueError(
                "method: grpo needs at least one reward, e.g. rewards: [exact_match] or "
                "[{name: format, args: {pattern: '^\\d+$'}}]"
            )
        if v and all(r.weight == 0 for r in v):
            raise ValueError("every reward's weight is 0: nothing to learn from")
        return v

    @field_validator("generation")
    @classmethod
    def _generation(cls, v: GenerationConfig, info: Any) -> GenerationConfig:
        if v.backend == "vllm" and info.data.get("method") != "grpo":
            raise ValueError("backend: vllm generates GRPO's completions; it is for method: grpo")
        if v.backend == "vllm" and v.mode == "server" and not v.server_base_url:
            raise ValueError("mode: server needs server_base_url (e.g. http://vllm-host:8000)")
        return v


class RunConfig(_Strict):
    """Everything one run needs. Load from YAML with :meth:`from_yaml`.

    Example:
        >>> cfg = RunConfig(name="demo", peft=PEFTConfig(rank=4))
        >>> cfg.backend, cfg.peft.rank
        ('stub', 4)
    """

    name: str
    backend: str = "stub"  # "trl" | "stub"
    seed: int = 42
    deterministic: bool = True
    output_dir: str = "artifacts"
    model_name_or_path: str | None = None
    max_steps: int = 1000
    batch_size: int = 8
    peft: PEFTConfig | None = None
    distributed: DistributedConfig | None = None
    observability_backend: str = "none"  # "wandb" | "mlflow" | "tensorboard" | "none"
    observability_project: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    governance: GovernanceConfig = Field(default_factory=GovernanceConfig)
    curation: CurationConfig = Field(default_factory=CurationConfig)
    storage_root: str | None = None  # artifact store root (path or fsspec URI); default output_dir

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        return _one_of(v, BACKENDS, "backend")

    @field_validator("observability_backend")
    @classmethod
    def _observability(cls, v: str) -> str:
        return _one_of(v, OBSERVABILITY_BACKENDS, "observability_backend")

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int) -> int:
        if not 0 <= v < 2**32:
            raise ValueError("must be in [0, 2**32)")
        return v

    @field_validator("max_steps", "batch_size")
    @classmethod
    def _steps(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @property
    def store_root(self) -> str:
        """Root of the artifact store: ``storage_root`` if set, else ``output_dir``."""
        return self.storage_root or self.output_dir

    @classmethod
    def from_yaml(
        cls,
        path: str | Path,
        overrides: dict[str, Any] | None = None,
        *,
        check_inputs: bool = False,
    ) -> RunConfig:
        """Load and validate a YAML config.

        Relative data paths (``data.train_path``, ``data.eval_path``) and a relative
        ``model_name_or_path`` that exists beside the file are resolved against the file's folder,
        so a config runs the same from any working directory. The same paths given as
        ``overrides`` are resolved against the current working directory (the data paths made
        absolute; a model path is kept as given, which already means the working directory).
        ``data.template`` must name a registered template.

        Args:
            path: the YAML file.
            overrides: dotted keys applied over the file's values (``{"peft.rank": 16}``), as
                the CLI's ``--set KEY=VALUE`` flags; an error one causes names it
                (``--set peft.rank=0: peft.rank: must be >= 1``).
            check_inputs: also require that local input files (``data.train_path``,
                ``data.eval_path``) exist, as ``provenir run`` and ``provenir config validate`` do.

        Raises:
            ConfigError: naming the file and YAML line (or the override), the key path and the fix.
        """
        path = Path(path)
        text = read_yaml_text(path, kind="config file")
        raw = load_yaml(text, source=str(path))
        if raw is None:
            raise ConfigError(f"{path}: config file is empty; it needs at least `name:`")
        if not isinstance(raw, dict):
            raise ConfigError(
                f"{path}:1: the top level must be a mapping of keys (name:, backend:, …), "
                f"got a {type(raw).__name__}"
            )
        lines, duplicates, booleans = _key_lines(text)
        if duplicates:
            keys, line, first = duplicates[0]
            raise ConfigError(
                f"{path}:{line}: duplicate key {'.'.join(map(str, keys))!r} (first set on line {first}); "
                "YAML would silently keep only the last one: remove one of them"
            )
        origins = _Origins(path, lines, overrides or {})
        for dotted, value in (overrides or {}).items():
            _set_dotted(raw, dotted, value, origins)
        return _validated(cls, raw, path, origins, booleans, check_inputs)

    def to_yaml(self) -> str:
        """The config as YAML (every field, defaults included), stable key order."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=True, allow_unicode=True)


def _validated(cls: type[RunConfig], raw: dict[str, Any], path: Path, origins: _Origins, booleans: dict,
               check_inputs: bool) -> RunConfig:
    """``raw`` (overrides already applied) as a ``cls``: validated, relative paths resolved against
    ``path``'s folder, the template (and with ``check_inputs`` the input files) checked; every problem
    a :class:`ConfigError` naming the file and line."""
    try:
        config = cls.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, origins, booleans)) from None
    config = _resolve_relative_paths(config, path.parent, origins)
    problems = [_template_problem(config, origins)]
    if check_inputs:
        problems += _input_problems(config, origins)
    problems = [p for p in problems if p]
    if problems:
        raise ConfigError("\n".join(problems))
    return config


def semantic_config(config: RunConfig | dict[str, Any]) -> dict[str, Any]:
    """The part of a config that ``config_hash`` covers (see :data:`NON_SEMANTIC_FIELDS`)."""
    data = config.model_dump(mode="json") if isinstance(config, RunConfig) else dict(config)
    data = _deep_copy(data)
    for dotted in NON_SEMANTIC_FIELDS:
        parts = dotted.split(".")
        node: Any = data
        for part in parts[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
            if node is None:
                break
        if isinstance(node, dict):
            node.pop(parts[-1], None)
    return data


def config_hash(config: RunConfig | dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of :func:`semantic_config`."""
    from provenir.core.hashing import sha256_json

    if isinstance(config, dict):
        config = RunConfig.model_validate(config)  # fill defaults so equal configs hash equal
    return sha256_json(semantic_config(config))


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _override_text(value: Any) -> str:
    """An override's value as it would be typed after ``--set KEY=``."""
    if isinstance(value, str):
        return value
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


class _Origins:
    """Where each value of a loaded config came from: a line of the file, or an override."""

    def __init__(self, path: Path, lines: dict[tuple[Any, ...], int], overrides: dict[str, Any]):
        self.path = path
        self.lines = lines
        self.overrides = [(tuple(key.split(".")), key, value) for key, value in overrides.items()]

    def override(self, loc: tuple[Any, ...]) -> str | None:
        """``--set KEY=VALUE`` for the override that set ``loc`` (or a section above it, or the
        only source of the section ``loc``), else ``None``."""
        best: tuple[int, str] | None = None
        for parts, key, value in self.overrides:
            sets_it = loc[: len(parts)] == parts
            creates_it = bool(loc) and parts[: len(loc)] == loc and loc not in self.lines
            if (sets_it or creates_it) and (best is None or len(parts) > best[0]):
                best = (len(parts), f"--set {key}={_override_text(value)}")
        return best[1] if best else None

    def where(self, loc: tuple[Any, ...]) -> str:
        """``--set KEY=VALUE``, ``file:line`` of ``loc`` (or of its nearest enclosing key), or the
        file alone for a value left at its default."""
        override = self.override(loc)
        if override:
            return override
        for cut in range(len(loc), 0, -1):
            line = self.lines.get(loc[:cut])
            if line is not None:
                return f"{self.path}:{line}"
        return str(self.path)


def _set_dotted(raw: dict[str, Any], dotted: str, value: Any, origins: _Origins) -> None:
    parts = dotted.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1], start=1):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            section = tuple(parts[:depth])
            line = origins.lines.get(section)
            source = f" (set to {shown(child)} on {origins.path}:{line})" if line else ""
            raise ConfigError(
                f"--set {dotted}={_override_text(value)}: "
                f"{'.'.join(section)} is not a section{source}"
            )
        node = child
    node[parts[-1]] = value


def _resolve_relative_paths(config: RunConfig, base: Path, origins: _Origins) -> RunConfig:
    data = config.data
    updates: dict[str, Any] = {}
    for key in ("train_path", "eval_path"):
        value = getattr(data, key)
        if value and "://" not in value and not Path(value).is_absolute():
            anchor = Path.cwd() if origins.override(("data", key)) else base
            updates[key] = str((anchor / value).resolve())
    if updates:
        config = config.model_copy(update={"data": data.model_copy(update=updates)})
    model = config.model_name_or_path
    if (
        model
        and "://" not in model
        and not Path(model).is_absolute()
        and not origins.override(("model_name_or_path",))
        and (base / model).exists()
    ):
        config = config.model_copy(update={"model_name_or_path": str((base / model).resolve())})
    return config


def _template_problem(config: RunConfig, origins: _Origins) -> str | None:
    # Checked where the config is loaded, naming the line, not later inside a run. Core knows the
    # template names only; the templates live a floor up, in provenir.data.templates.
    name = config.data.template
    available = template_names()
    if name in available:
        return None
    close = difflib.get_close_matches(name, available, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"{origins.where(('data', 'template'))}: data.template: unknown template {name!r}"
        f"{hint} (available: {', '.join(available)})"
    )


def _input_problems(config: RunConfig, origins: _Origins) -> list[str]:
    from provenir.core.io import local_path

    problems = []
    for key in ("train_path", "eval_path"):
        value = getattr(config.data, key)
        local = local_path(value) if value else None
        if local is None:  # unset, or an fsspec URI (checked when it is read)
            continue
        where = f"{origins.where(('data', key))}: data.{key}"
        if not Path(local).exists():
            problems.append(f"{where}: file not found: {local}")
        elif Path(local).is_dir():
            problems.append(f"{where}: is a folder, expected a JSONL file: {local}")
    return problems


def shown(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages about any input."""
    short = reprlib.Repr()  # attributes, not keywords: Python 3.10 and 3.11 take no keywords
    short.maxlevel, short.maxlist, short.maxdict = 3, 8, 8
    short.maxstring = short.maxother = limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def key_lines(text: str) -> dict[tuple[Any, ...], int]:
    """The (1-based) line of each key path in a YAML document (``{("peft", "rank"): 14}``); empty
    when it does not parse. For error messages of any YAML file a command reads."""
    return _key_lines(text)[0]


def _key_lines(
    text: str,
) -> tuple[
    dict[tuple[Any, ...], int], list[tuple[tuple[Any, ...], int, int]], dict[tuple[Any, ...], str]
]:
    """Map each key path in a YAML document to the (1-based) line where it appears; also list
    keys set twice in one mapping as ``(key path, line, first line)``, and the source text of
    each value YAML read as a boolean (``off``, ``yes``, …)."""
    try:
        root = compose_yaml(text, source="<key lines>")
    except ConfigError:
        return {}, [], {}
    lines: dict[tuple[Any, ...], int] = {}
    duplicates: list[tuple[tuple[Any, ...], int, int]] = []
    booleans: dict[tuple[Any, ...], str] = {}

    def walk(node: Any, prefix: tuple[Any, ...]) -> None:
        if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:bool":
            booleans[prefix] = node.value
        elif isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key, line = key_node.value, key_node.start_mark.line + 1
                if prefix + (key,) in lines and key_node.tag != "tag:yaml.org,2002:merge":
                    duplicates.append((prefix + (key,), line, lines[prefix + (key,)]))
                lines[prefix + (key,)] = line
                walk(value_node, prefix + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[prefix + (index,)] = item.start_mark.line + 1
                walk(item, prefix + (index,))

    if root is not None:
        walk(root, ())
    return lines, duplicates, booleans


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):  # an item of a list of models: the model is already current
            continue
        field = current.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if current is None:
            return None
    return sorted(current.model_fields)


#: The string fields that take one of a few words, for hints (their validators do the checking).
_CHOICES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("backend",): BACKENDS,
    ("observability_backend",): OBSERVABILITY_BACKENDS,
    ("distributed", "strategy"): STRATEGIES,
    ("training", "method"): TRAINING_METHODS,
    ("training", "lr_scheduler"): LR_SCHEDULERS,
    ("training", "generation", "backend"): GENERATION_BACKENDS,
    ("training", "generation", "mode"): VLLM_MODES,
    ("governance", "pii"): PII_ACTIONS,
    ("governance", "pii_replacement"): PII_REPLACEMENTS,
    ("governance", "secrets"): SECRET_ACTIONS,
    ("curation", "decontamination"): DECONTAMINATION_MODES,
}


def _boolean_hint(
    loc: tuple[Any, ...], value: bool, origins: _Origins, booleans: dict[tuple[Any, ...], str]
) -> str:
    """YAML 1.1 reads unquoted on/off/yes/no/true/false as booleans; say so where a string was
    expected, with the quoted word to write instead."""
    choices = _CHOICES.get(tuple(loc))
    allowed = f" (allowed: {', '.join(choices)})" if choices else ""
    word = None if origins.override(loc) else booleans.get(loc)
    if word is not None:
        return (
            f"YAML reads the unquoted {word} as the boolean {str(value).lower()}; "
            f"quote it: '{word}'{allowed}"
        )
    key = ".".join(str(p) for p in loc)
    example = "off" if value is False else "on"  # an override: the word typed is not known
    return (
        f"got the boolean {str(value).lower()}: YAML reads unquoted on/off/yes/no as booleans; "
        f"""quote it: --set "{key}='{example}'"{allowed}"""
    )


def _format_validation(
    exc: ValidationError, origins: _Origins, booleans: dict[tuple[Any, ...], str]
) -> str:
    messages = []
    for error in exc.errors():
        loc = tuple(part for part in error["loc"] if isinstance(part, (str, int)))
        where = origins.where(loc)
        key = ".".join(str(p) for p in loc) or "(top level)"
        if error["type"] == "extra_forbidden":
            allowed = _allowed_keys(RunConfig, loc)
            hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
            messages.append(f"{where}: {key}: unknown key{hint}")
            continue
        if error["type"] == "missing":
            messages.append(f"{where}: {key}: required key is missing")
            continue
        if error["type"] == "string_type" and isinstance(error.get("input"), bool):
            messages.append(f"{where}: {key}: {_boolean_hint(loc, error['input'], origins, booleans)}")
            continue
        msg = error["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        messages.append(f"{where}: {key}: {msg} (got {shown(error.get('input'))})")
    return "\n".join(messages)
