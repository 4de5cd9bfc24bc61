"""The ``sweep:`` section: which run-config keys to vary, how to search, when to stop a trial.

A sweep is written either inside a run config (every other key is the base run) or in a file of
its own that names the base config::

    # sweep.yaml                                # or: the run config itself, plus this section
    base: run.yaml
    sweep:
      metric: eval_loss                         # an eval metric reported at every evaluation
      mode: min
      search: grid                              # grid | random | optuna (seeded)
      eval_steps: 4                             # evaluate, report and checkpoint every 4 steps
      scheduler: {type: asha, grace_period: 1, reduction_factor: 2}
      max_concurrent_trials: 2
      resources: {workers: 1, cpus_per_worker: 1}
      search_space:
        training.learning_rate: [0.0005, 0.005] # a list is a grid
        peft.rank: {grid: [4, 8]}
        peft.alpha: {choice: [8, 16]}           # also: uniform, loguniform: [lo, hi]; randint: [lo, hi)

:func:`load_sweep` validates both the base run and the section, as strictly as
:meth:`~provenir.core.config.RunConfig.from_yaml` does: an error names the file, the line and the
key (``sweep.yaml:9: sweep.search_space.peft.rank: value 0: must be >= 1``). Every value a trial
could take is checked against the run config before any work starts (each grid and choice value,
the ends of each range).

:func:`expand_trials` gives the trial configurations of a ``grid`` or ``random`` search without
Ray: the grid in the order the keys are written, repeated ``num_samples`` times, each sampled key
drawn from ``random.Random(seed)``. The same section and seed always give the same list; the
sweep runs exactly that list (Optuna proposes its trials as results arrive, seeded).
"""

from __future__ import annotations

import difflib
import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from provenir.core.config import (
    RunConfig,
    _format_validation,
    _key_lines,
    _Origins,
    _set_dotted,
    _validated,
    shown,
)
from provenir.core.errors import ConfigError
from provenir.core.yaml_safe import load_yaml, read_yaml_text

SEARCH_ALGORITHMS: tuple[str, ...] = ("grid", "random", "optuna")
SCHEDULERS: tuple[str, ...] = ("asha", "fifo")
DOMAINS: tuple[str, ...] = ("grid", "choice", "uniform", "loguniform", "randint")
#: what a trial reports at every evaluation (the trainer's own evaluation of ``data.eval_path``)
SWEEP_METRICS: tuple[str, ...] = (
    "eval_loss", "eval_mean_token_accuracy", "eval_rewards/accuracies", "eval_rewards/margins",
)
#: run-config keys a search space may not vary, and why
FIXED_KEYS: dict[str, str] = {
    "name": "trials are named after the sweep",
    "backend": "trials run the trl backend",
    "model_name_or_path": "the data is tokenized once for every trial",
    "data": "the data is prepared once for every trial",
    "training.method": "the data is prepared once for every trial",
    "training.max_seq_length": "the data is tokenized once for every trial",
    "training.completion_only_loss": "the data is tokenized once for every trial",
    "training.save_steps": "trials checkpoint at every evaluation (sweep.eval_steps)",
    "distributed": "trial resources are set in sweep.resources",
    "governance": "the data is prepared once for every trial",
    "curation": "the data is prepared once for every trial",
    "output_dir": "it changes where results go, not what a trial computes",
    "storage_root": "it changes where results go, not what a trial computes",
    "observability_backend": "it changes where metrics go, not what a trial computes",
    "observability_project": "it changes where metrics go, not what a trial computes",
    "deterministic": "sweeps are reproducible by construction",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SchedulerConfig(_Strict):
    """``asha``: successive halving over evaluations; ``fifo``: every trial runs to the end.

    ``grace_period``: evaluations every trial gets before it can be stopped; at each rung (after
    ``grace_period × reduction_factor^k`` evaluations) a trial worse than the best
    ``1/reduction_factor`` of the trials before it at that rung is stopped.
    """

    type: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {v!r}; allowed: {', '.join(SCHEDULERS)}")
        return v

    @field_validator("grace_period")
    @classmethod
    def _grace(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1 (evaluations before a trial can be stopped)")
        return v

    @field_validator("reduction_factor")
    @classmethod
    def _factor(cls, v: int) -> int:
        if v < 2:
            raise ValueError("must be >= 2 (keep the best 1/reduction_factor at each rung)")
        return v


class TrialResources(_Strict):
    """What one trial holds: a Ray Train worker group, plus a small share for the Tune trainable."""

    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    trainable_cpus: float = 0.1

    @field_validator("workers")
    @classmethod
    def _workers(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("cpus_per_worker", "trainable_cpus")
    @classmethod
    def _cpus(cls, v: float) -> float:
        if not v > 0:
            raise ValueError("must be > 0")
        return v

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpus(cls, v: float) -> float:
        if v < 0:
            raise ValueError("must be >= 0")
        return v


class SweepConfig(_Strict):
    """The ``sweep:`` section (see the module docstring). ``search_space`` is checked by
    :func:`load_sweep` against the base run config: ``{dotted key: dimension}``."""

    name: str | None = None
    metric: str = "eval_loss"
    mode: str = "min"
    search: str = "grid"
    seed: int | None = None  # default: the base run's seed
    num_samples: int = 1
    max_concurrent_trials: int = 1
    eval_steps: int = 10
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    resources: TrialResources = Field(default_factory=TrialResources)
    search_space: dict[str, Any]

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: str) -> str:
        if v not in SWEEP_METRICS:
            close = difflib.get_close_matches(v, SWEEP_METRICS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown metric {v!r}{hint} (reported at every evaluation: {', '.join(SWEEP_METRICS)})")
        return v

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: str) -> str:
        if v not in ("min", "max"):
            raise ValueError("must be 'min' or 'max'")
        return v

    @field_validator("search")
    @classmethod
    def _search(cls, v: str) -> str:
        if v not in SEARCH_ALGORITHMS:
            raise ValueError(f"unknown search {v!r}; allowed: {', '.join(SEARCH_ALGORITHMS)}")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: int | None) -> int | None:
        if v is not None and not 0 <= v < 2**32:
            raise ValueError("must be in [0, 2**32)")
        return v

    @field_validator("num_samples", "max_concurrent_trials", "eval_steps")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v

    @field_validator("search_space")
    @classmethod
    def _space(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("name at least one key to vary (e.g. peft.rank: [4, 8])")
        return v

    def dimensions(self) -> dict[str, Dimension]:
        """The search space parsed (it was checked when the sweep was loaded)."""
        return {key: parse_dimension(key, value) for key, value in self.search_space.items()}


@dataclass(frozen=True)
class Dimension:
    """One key of the search space: ``kind`` in :data:`DOMAINS` and its values or bounds."""

    key: str
    kind: str
    values: tuple[Any, ...]

    @property
    def is_grid(self) -> bool:
        return self.kind == "grid"

    def candidates(self) -> list[Any]:
        """Values to check against the run config: every listed value, or the ends of a range."""
        if self.kind in ("grid", "choice"):
            return list(self.values)
        low, high = self.values
        return [low, high - 1] if self.kind == "randint" else [low, high]

    def sample(self, rng: random.Random) -> Any:
        if self.kind == "choice":
            return self.values[rng.randrange(len(self.values))]
        low, high = self.values
        if self.kind == "uniform":
            return rng.uniform(low, high)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        if self.kind == "randint":
            return rng.randrange(low, high)
        raise ValueError(f"{self.key}: a grid is not sampled")


def parse_dimension(key: str, value: Any) -> Dimension:
    """A search-space entry as a :class:`Dimension`: a list is a grid; else ``{kind: values}``.

    Raises:
        ValueError: naming what is wrong with the entry (the caller adds the file and line).
    """
    if isinstance(value, list):
        value = {"grid": value}
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(
            f"must be a list (a grid) or one of {{{', '.join(f'{d}: …' for d in DOMAINS)}}} (got {shown(value)})"
        )
    (kind, values), = value.items()
    if kind not in DOMAINS:
        close = difflib.get_close_matches(str(kind), DOMAINS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown kind {kind!r}{hint} (allowed: {', '.join(DOMAINS)})")
    if not isinstance(values, list) or not values:
        raise ValueError(f"{kind}: expects a non-empty list (got {shown(values)})")
    if kind in ("grid", "choice"):
        if kind == "grid" and len({repr(v) for v in values}) != len(values):
            raise ValueError(f"grid: lists a value twice ({shown(values)}); each grid point runs once")
        return Dimension(key, kind, tuple(values))
    if len(values) != 2 or not all(_is_number(v) for v in values):
        raise ValueError(f"{kind}: expects [low, high], two numbers (got {shown(values)})")
    low, high = values
    if kind == "randint":
        if not all(isinstance(v, int) for v in values):
            raise ValueError(f"randint: expects two integers [low, high) (got {shown(values)})")
        if high - low < 1:
            raise ValueError(f"randint: [low, high) holds no integer (got {shown(values)}); high is excluded")
    elif not low < high:
        raise ValueError(f"{kind}: low must be < high (got {shown(values)})")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"loguniform: bounds must be > 0 (got {shown(values)})")
    return Dimension(key, kind, (low, high))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class SweepSpec:
    """A loaded sweep: the base run, the section, and where they came from."""

    base: RunConfig
    sweep: SweepConfig
    source: str  # the sweep file
    base_source: str  # the file the base run was read from (the same file when inline)

    @property
    def name(self) -> str:
        return self.sweep.name or self.base.name

    @property
    def seed(self) -> int:
        return self.sweep.seed if self.sweep.seed is not None else self.base.seed

    def trial_config(self, params: dict[str, Any], index: int) -> RunConfig:
        """The run config of trial ``index``: the base run with ``params`` applied."""
        return apply_params(self.base, params, name=f"{self.name}-t{index:02d}")

    def best_config(self, params: dict[str, Any]) -> RunConfig:
        """The base run with the best trial's ``params``: ready for ``provenir train``."""
        return apply_params(self.base, params, name=f"{self.name}-best")

    def to_yaml(self) -> str:
        """The resolved sweep as one file (base run inline, plus the section): what ``--resume``
        reloads, so the original files are not needed again."""
        import yaml

        data = self.base.model_dump(mode="json")
        data["sweep"] = self.sweep.model_dump(mode="json")
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def apply_params(base: RunConfig, params: dict[str, Any], *, name: str | None = None) -> RunConfig:
    """``base`` with each dotted key of ``params`` set (a missing ``peft`` section is created)."""
    data = base.model_dump(mode="json")
    for dotted, value in params.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    if name is not None:
        data["name"] = name
    return RunConfig.model_validate(data)


def expand_trials(sweep: SweepConfig, seed: int) -> list[dict[str, Any]] | None:
    """The trial configurations of a ``grid`` or ``random`` search, in the order they run; ``None``
    for ``optuna`` (it proposes trials as results arrive).

    The grid is the product of the grid keys in the order they are written; it is repeated
    ``num_samples`` times, and every other key is drawn afresh for each trial from one
    ``random.Random(seed)``.
    """
    if sweep.search == "optuna":
        return None
    dims = sweep.dimensions()
    grid_keys = [k for k, d in dims.items() if d.is_grid]
    points = list(itertools.product(*(dims[k].values for k in grid_keys))) or [()]
    rng = random.Random(seed)
    trials = []
    for _ in range(sweep.num_samples):
        for point in points:
            fixed = dict(zip(grid_keys, point, strict=True))
            trials.append({k: fixed[k] if d.is_grid else d.sample(rng) for k, d in dims.items()})
    return trials


# -- loading --------------------------------------------------------------------------------------


def load_sweep(path: str | Path, overrides: dict[str, Any] | None = None, *, check_inputs: bool = True) -> SweepSpec:
    """Load and check a sweep file (the run config with a ``sweep:`` section, or ``base:`` +
    ``sweep:``). ``overrides`` (``--set`` flags) apply to the base run.

    Raises:
        ConfigError: naming the file, the line and the key, for the base run or the section.
    """
    path = Path(path)
    text = read_yaml_text(path, kind="sweep file")
    raw = load_yaml(text, source=str(path))
    if not isinstance(raw, dict) or "sweep" not in raw:
        got = "it is empty" if raw is None else (
            f"its top level is a {type(raw).__name__}" if not isinstance(raw, dict) else "it has no sweep: key")
        raise ConfigError(
            f"{path}:1: a sweep file needs a `sweep:` section (with the base run's keys beside it, or "
            f"`base: RUN_CONFIG.yaml`); {got}"
        )
    lines, duplicates, booleans = _key_lines(text)
    if duplicates:
        keys, line, first = duplicates[0]
        raise ConfigError(
            f"{path}:{line}: duplicate key {'.'.join(map(str, keys))!r} (first set on line {first}); "
            "YAML would silently keep only the last one: remove one of them"
        )
    section = raw.pop("sweep")
    origins = _Origins(path, lines, overrides or {})
    if "base" in raw:
        extra = sorted(k for k in raw if k != "base")
        if extra:
            raise ConfigError(
                f"{origins.where((extra[0],))}: {extra[0]}: a sweep file with `base:` holds only `base:` "
                "and `sweep:`; put run keys in the base config (or drop `base:` and write the run here)"
            )
        if not isinstance(raw["base"], str) or not raw["base"].strip():
            raise ConfigError(f"{origins.where(('base',))}: base: must be the path of a run config YAML")
        base_path = Path(raw["base"])
        base_path = base_path if base_path.is_absolute() else path.parent / base_path
        if not base_path.is_file():
            raise ConfigError(f"{origins.where(('base',))}: base: file not found: {base_path}")
        base = RunConfig.from_yaml(base_path, overrides, check_inputs=check_inputs)
        base_source = str(base_path)
    else:
        base = _load_inline_base(raw, path, origins, booleans, check_inputs)
        base_source = str(path)
    sweep = _load_section(section, origins)
    _check_against_base(sweep, base, origins)
    return SweepSpec(base=base, sweep=sweep, source=str(path), base_source=base_source)


def _load_inline_base(raw: dict[str, Any], path: Path, origins: _Origins, booleans: dict, check_inputs: bool) -> RunConfig:
    for _parts, key, value in origins.overrides:
        _set_dotted(raw, key, value, origins)
    return _validated(RunConfig, raw, path, origins, booleans, check_inputs)


def _load_section(section: Any, origins: _Origins) -> SweepConfig:
    if not isinstance(section, dict):
        raise ConfigError(
            f"{origins.where(('sweep',))}: sweep: must be a mapping (metric:, search_space:, …), got {shown(section)}"
        )
    try:
        return SweepConfig.model_validate(section)
    except ValidationError as exc:
        messages = []
        for error in exc.errors():
            loc = ("sweep", *(p for p in error["loc"] if isinstance(p, str | int)))
            where, key = origins.where(loc), ".".join(str(p) for p in loc)
            if error["type"] == "extra_forbidden":
                allowed = _section_keys(loc[1:])
                hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
                messages.append(f"{where}: {key}: unknown key{hint}")
            elif error["type"] == "missing":
                messages.append(f"{where}: {key}: required key is missing")
            else:
                msg = error["msg"].removeprefix("Value error, ")
                messages.append(f"{where}: {key}: {msg} (got {shown(error.get('input'))})")
        raise ConfigError("\n".join(messages)) from None


def _section_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = SweepConfig
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        model = field.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
    return sorted(model.model_fields)


def _check_against_base(sweep: SweepConfig, base: RunConfig, origins: _Origins) -> None:
    problems: list[str] = []

    def where(*loc: Any) -> str:
        return origins.where(("sweep", *loc))

    if base.backend != "trl":
        problems.append(f"{origins.where(('backend',))}: backend: a sweep trains with the trl backend "
                        f"(got {base.backend!r}); set backend: trl")
    if base.training.method not in ("sft", "dpo"):
        problems.append(f"{origins.where(('training', 'method'))}: training.method: a sweep compares trials on "
                        f"the eval set, which {base.training.method} runs do not evaluate; sweep sft or dpo")
    if not base.data.train_path:
        problems.append(f"{origins.where(('data', 'train_path'))}: data.train_path: required to sweep")
    if not base.data.eval_path:
        problems.append(f"{origins.where(('data', 'eval_path'))}: data.eval_path: required: trials are "
                        f"compared on {sweep.metric}, computed on the eval set at every evaluation")
    if sweep.metric.startswith("eval_rewards/") and base.training.method != "dpo":
        problems.append(f"{where('metric')}: sweep.metric: {sweep.metric} is reported by DPO runs only "
                        "(training.method: dpo); use eval_loss or eval_mean_token_accuracy")
    for key, value in sweep.search_space.items():
        loc = ("search_space", key)
        label = f"sweep.search_space.{key}"
        fixed = next((FIXED_KEYS[p] for p in _prefixes(key) if p in FIXED_KEYS), None)
        if fixed is not None:
            problems.append(f"{where(*loc)}: {label}: cannot be varied ({fixed})")
            continue
        if not _is_config_key(key):
            close = difflib.get_close_matches(key, _config_keys(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where(*loc)}: {label}: not a run-config key{hint}")
            continue
        try:
            dim = parse_dimension(key, value)
        except ValueError as exc:
            problems.append(f"{where(*loc)}: {label}: {exc}")
            continue
        if sweep.search == "grid" and not dim.is_grid:
            problems.append(f"{where(*loc)}: {label}: search: grid runs grids only (got {dim.kind}); "
                            "write a list, or set sweep.search: random or optuna")
        if sweep.search == "optuna" and dim.is_grid:
            problems.append(f"{where(*loc)}: {label}: search: optuna samples, it runs no grid; "
                            "write {choice: [...]} instead")
        for candidate in dim.candidates():
            try:
                apply_params(base, {key: candidate})
            except ValidationError as exc:
                first = exc.errors()[0]
                msg = first["msg"].removeprefix("Value error, ")
                problems.append(f"{where(*loc)}: {label}: value {shown(candidate)}: {msg}")
                break
    if problems:
        raise ConfigError("\n".join(problems))


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _config_keys() -> list[str]:
    keys = []
    for name, field in RunConfig.model_fields.items():
        sub = _section_model(field.annotation)
        keys += [f"{name}.{k}" for k in sub.model_fields] if sub else [name]
    return keys


def _section_model(annotation: Any) -> Any:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _is_config_key(key: str) -> bool:
    return key in _config_keys()


__all__ = [
    "DOMAINS", "FIXED_KEYS", "SCHEDULERS", "SEARCH_ALGORITHMS", "SWEEP_METRICS", "Dimension",
    "SchedulerConfig", "SweepConfig", "SweepSpec", "TrialResources", "apply_params", "expand_trials",
    "load_sweep", "parse_dimension",
]
