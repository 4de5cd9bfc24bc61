"""Standard benchmarks through EleutherAI's lm-evaluation-harness (``pip install 'provenir[benchmarks]'``).

``BenchmarkConfig(benchmark="arc_easy")`` names a benchmark; :data:`BENCHMARKS` maps Provenir's
names to lm-eval task names and the metric reported as ``score`` (any other lm-eval task name is
passed through). Hub-hosted benchmarks (mmlu, hellaswag, arc_easy, …) run when the Hugging Face hub
is reachable or their datasets are cached; without them the error says so.

Small offline tasks in lm-eval's YAML format ship in ``provenir/eval/tasks`` (``provenir_arith``:
4-way multiple-choice addition; ``provenir_copy``: repeat a word, greedy generation + exact match).
Their ``data_files`` are relative to that folder; :class:`BenchmarkEvaluator` copies the YAMLs
to a temporary include folder with absolute paths before lm-eval reads them. ``task_dirs=`` adds
folders of your own YAML tasks, handled the same way.

``model_path`` is a model folder, or a PEFT adapter folder (``adapter_config.json``), in which case
the base model is its ``base_model_name_or_path`` (or ``base_model=``) and lm-eval loads the adapter
with ``peft=``.

Example (see docs/evaluation.md):
    >>> BenchmarkConfig(benchmark="provenir_arith", limit=10).num_fewshot
    0
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from provenir.core.errors import ConfigError, DependencyError, ProvenirError
from provenir.core.hashing import sha256_json

__all__ = [
    "BENCHMARKS",
    "SHIPPED_TASKS_DIR",
    "BenchmarkConfig",
    "BenchmarkError",
    "BenchmarkEvaluator",
    "BenchmarkResult",
    "BenchmarkSpec",
]

SHIPPED_TASKS_DIR = Path(__file__).resolve().parent / "tasks"


class BenchmarkError(ProvenirError):
    """A benchmark could not be run (unknown task, unreachable dataset, model that will not load)."""


@dataclass(frozen=True)
class BenchmarkSpec:
    """How a benchmark name maps onto lm-eval: the task (or group) and the metric reported."""

    task: str
    metric: str
    description: str = ""


BENCHMARKS: dict[str, BenchmarkSpec] = {
    "mmlu": BenchmarkSpec("mmlu", "acc", "MMLU, 57 subjects, 4-way multiple choice"),
    "hellaswag": BenchmarkSpec("hellaswag", "acc_norm", "HellaSwag commonsense completion"),
    "arc_easy": BenchmarkSpec("arc_easy", "acc", "AI2 ARC, easy set"),
    "arc_challenge": BenchmarkSpec("arc_challenge", "acc_norm", "AI2 ARC, challenge set"),
    "winogrande": BenchmarkSpec("winogrande", "acc", "WinoGrande"),
    "piqa": BenchmarkSpec("piqa", "acc_norm", "Physical interaction QA"),
    "boolq": BenchmarkSpec("boolq", "acc", "BoolQ yes/no questions"),
    "truthfulqa": BenchmarkSpec("truthfulqa_mc2", "acc", "TruthfulQA multiple choice (MC2)"),
    "gsm8k": BenchmarkSpec("gsm8k", "exact_match,strict-match", "GSM8K grade-school maths, 5-shot usual"),
    "provenir_arith": BenchmarkSpec("provenir_arith", "acc", "shipped: 4-way addition (offline)"),
    "provenir_copy": BenchmarkSpec("provenir_copy", "exact_match", "shipped: repeat a word (offline)"),
}

_METRIC_PREFERENCE = ("acc", "acc_norm", "exact_match", "f1", "mc2", "bleu")


class BenchmarkConfig(BaseModel):
    """One benchmark run: its name, few-shot count, and an optional example limit (for tests)."""

    model_config = ConfigDict(extra="forbid")

    benchmark: str = Field(min_length=1)  # "mmlu" | "hellaswag" | "arc_easy" | ...
    num_fewshot: int = Field(default=0, ge=0)
    limit: int | None = Field(default=None, ge=1)  # limit number of examples (for testing)


@dataclass
class BenchmarkResult:
    """The benchmark's headline ``score`` over ``num_examples`` examples, and every metric lm-eval gave."""

    benchmark: str
    score: float
    num_examples: int
    config: BenchmarkConfig
    metric: str = ""
    stderr: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    task: str = ""
    model_args: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "score": self.score,
            "num_examples": self.num_examples,
            "config": self.config.model_dump(),
            "metric": self.metric,
            "stderr": self.stderr,
            "metrics": self.metrics,
            "task": self.task,
        }


#: The local YAML tags lm-eval's task files may use; any other non-standard tag is refused.
_LM_EVAL_TAGS: tuple[str, ...] = ("!function",)


def _has_tagged(value: Any, tagged: type) -> bool:
    if isinstance(value, tagged):
        return True
    if isinstance(value, dict):
        return any(_has_tagged(v, tagged) for v in value.values())
    if isinstance(value, list):
        return any(_has_tagged(v, tagged) for v in value)
    return False


def _absolutise_tasks(source: Path, target: Path) -> None:
    """Copy ``source``'s task YAMLs into ``target`` with ``data_files`` made absolute.

    Each file is read with the safe loader's limits first: a hostile task file is a
    :class:`ConfigError` here, before lm-eval (whose loader has no limits) opens it.
    """
    import yaml

    from provenir.core.yaml_safe import Tagged, UnsafeYAMLError, load_yaml, read_yaml_text

    for path in sorted(source.rglob("*.yaml")):
        text = read_yaml_text(path, kind="lm-eval task file")
        try:
            config = load_yaml(text, source=str(path), keep_tags=_LM_EVAL_TAGS)
        except UnsafeYAMLError:
            raise
        except ConfigError:
            config = None  # malformed: copied unchanged, for lm-eval to report
        # a file with lm-eval's own tags (!function) is copied unchanged: dumping would drop them
        if isinstance(config, dict) and not _has_tagged(config, Tagged):
            files = (config.get("dataset_kwargs") or {}).get("data_files")
            if isinstance(files, dict):
                for split, rel in list(files.items()):
                    if isinstance(rel, str) and not Path(rel).is_absolute() and "://" not in rel:
                        resolved = (path.parent / rel).resolve()
                        if not resolved.is_file():
                            raise ConfigError(f"{path}: data_files.{split} = {rel!r} does not exist ({resolved})")
                        files[split] = str(resolved)
                text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
        out = target / path.relative_to(source)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")


_TASK_MANAGERS: dict[tuple[Any, ...], Any] = {}
_INCLUDE_ROOT: Path | None = None


def _include_root() -> Path:
    global _INCLUDE_ROOT
    if _INCLUDE_ROOT is None:
        import atexit
        import shutil

        _INCLUDE_ROOT = Path(tempfile.mkdtemp(prefix="provenir-lmeval-"))
        atexit.register(shutil.rmtree, _INCLUDE_ROOT, True)
    return _INCLUDE_ROOT


def _fingerprint(directory: Path) -> tuple[Any, ...]:
    return tuple(
        (str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(directory.rglob("*")) if p.is_file()
    )


_LM_EVAL_INDEX: dict[str, str] | None = None
_TASK_LINE = re.compile(r"^(?:task|group):\s*['\"]?([A-Za-z0-9_.\-]+)['\"]?\s*$", re.M)


@contextlib.contextmanager
def _quiet_git_probe() -> Iterator[None]:
    """lm-eval runs ``git describe`` for its results' ``git_hash`` with stderr left open, so outside
    a repository every benchmark prints ``fatal: not a git repository``; ask git quietly instead."""
    import lm_eval.evaluator as evaluator

    from provenir.core.abstractions import git_sha

    original = getattr(evaluator, "get_git_commit_hash", None)
    if original is None:
        yield
        return
    evaluator.get_git_commit_hash = lambda: git_sha()
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = original


def _lm_eval_task_folders() -> dict[str, Path]:
    """``{task or group name: top-level lm-eval task folder}`` from a text scan of lm-eval's YAMLs.

    A text scan takes about a second; lm-eval's own index of every task takes tens of seconds on a
    small machine, so only the folders holding the requested tasks are handed to it.
    """
    global _LM_EVAL_INDEX
    import lm_eval

    root = Path(lm_eval.__file__).resolve().parent / "tasks"
    if _LM_EVAL_INDEX is None:
        index: dict[str, str] = {}
        for path in sorted(root.rglob("*.yaml")):
            text = path.read_text(encoding="utf-8", errors="replace")
            for match in _TASK_LINE.finditer(text):
                index.setdefault(match.group(1), path.relative_to(root).parts[0])
        _LM_EVAL_INDEX = index
    return {name: root / folder for name, folder in _LM_EVAL_INDEX.items()}


def _task_manager(task_manager_cls: Any, task_dirs: list[Path], wanted: set[str]) -> Any:
    """An lm-eval TaskManager over the shipped tasks, the user's, and the lm-eval folders needed.

    Cached per process, keyed by the folders' file lists and modification times.
    """
    sources = [SHIPPED_TASKS_DIR, *task_dirs]
    key_base = tuple((str(d.resolve()), _fingerprint(d)) for d in sources)
    include = _include_root() / f"set-{sha256_json(repr(key_base))[:16]}"
    if not include.exists():
        staging = Path(tempfile.mkdtemp(dir=_include_root()))
        for index, directory in enumerate(sources):
            _absolutise_tasks(directory, staging / f"tasks{index}")
        staging.rename(include)
    local = set()
    for yaml_path in include.rglob("*.yaml"):
        local.update(_TASK_LINE.findall(yaml_path.read_text(encoding="utf-8", errors="replace")))
    folders: set[Path] = set()
    missing = []
    for name in sorted(wanted - local):
        folder = _lm_eval_task_folders().get(name)
        if folder is None:
            missing.append(name)
        else:
            folders.add(folder)
    if missing:
        raise BenchmarkError(
            f"unknown benchmark {missing[0]!r}: use one of {sorted(BENCHMARKS)}, an lm-eval task name, "
            "or a task of your own through task_dirs="
        )
    paths = [str(include), *sorted(str(f) for f in folders)]
    key = (key_base, tuple(paths))
    if key not in _TASK_MANAGERS:
        _TASK_MANAGERS[key] = task_manager_cls(include_path=paths, include_defaults=False)
    return _TASK_MANAGERS[key]

def _model_args(model_path: Path, base_model: str | None, dtype: str, extra: dict[str, Any]) -> str:
    if not model_path.exists():
        raise ConfigError(f"model path {model_path} does not exist")
    parts: list[str] = []
    adapter_config = model_path / "adapter_config.json"
    if adapter_config.is_file():
        try:
            declared = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{adapter_config}: not readable JSON ({exc})") from exc
        base = base_model or declared
        if not base:
            raise ConfigError(f"{adapter_config} names no base_model_name_or_path; pass base_model=")
        tokenizer = model_path if (model_path / "tokenizer_config.json").is_file() else base
        parts += [f"pretrained={base}", f"peft={model_path}", f"tokenizer={tokenizer}"]
    else:
        if not (model_path / "config.json").is_file():
            raise ConfigError(f"{model_path}: neither a model folder (config.json) nor a PEFT adapter (adapter_config.json)")
        parts.append(f"pretrained={model_path}")
    parts.append(f"dtype={dtype}")
    parts += [f"{k}={v}" for k, v in extra.items()]
    for part in parts:
        if "," in part.split("=", 1)[1]:
            raise ConfigError(f"model argument {part!r} contains a comma, which lm-eval cannot parse")
    return ",".join(parts)


def _pick_metric(task_results: dict[str, Any], preferred: str | None) -> tuple[str, float, float | None]:
    values = {k: v for k, v in task_results.items() if isinstance(v, (int, float)) and "_stderr" not in k}
    names = {k.split(",")[0]: k for k in values}
    key = None
    if preferred:
        key = preferred if preferred in values else names.get(preferred.split(",")[0])
    if key is None:
        for candidate in _METRIC_PREFERENCE:
            if candidate in names:
                key = names[candidate]
                break
    if key is None:
        if not values:
            raise BenchmarkError(f"lm-eval returned no numeric metric: {sorted(task_results)}")
        key = sorted(values)[0]
    metric, _, filt = key.partition(",")
    stderr = task_results.get(f"{metric}_stderr,{filt}" if filt else f"{metric}_stderr")
    stderr_value = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
    return key, float(values[key]), stderr_value


class BenchmarkEvaluator:
    """Run lm-eval benchmarks on a local model folder or a PEFT adapter.

    Args:
        device: torch device for the ``hf`` model (default ``cpu``).
        batch_size: lm-eval batch size.
        dtype: model dtype (``float32`` on CPU).
        task_dirs: extra folders of lm-eval task YAMLs (relative ``data_files`` are resolved).
        base_model: the base model of an adapter, overriding its ``adapter_config.json``.
        seed: lm-eval's random, NumPy, torch and few-shot seeds.
        model_kwargs: extra ``model_args`` for lm-eval's ``hf`` model (e.g. ``{"max_length": 512}``).
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        batch_size: int = 8,
        dtype: str = "float32",
        task_dirs: list[str | Path] | None = None,
        base_model: str | None = None,
        seed: int = 0,
        model_kwargs: dict[str, Any] | None = None,
    ):
        if batch_size < 1:
            raise ConfigError(f"BenchmarkEvaluator(batch_size={batch_size}): must be >= 1")
        self.device = device
        self.batch_size = batch_size
        self.dtype = dtype
        self.task_dirs = [Path(d) for d in (task_dirs or [])]
        for directory in self.task_dirs:
            if not directory.is_dir():
                raise ConfigError(f"BenchmarkEvaluator(task_dirs=...): {directory} is not a folder")
        self.base_model = base_model
        self.seed = seed
        self.model_kwargs = dict(model_kwargs or {})

    def run(self, model_path: str | Path, config: BenchmarkConfig) -> BenchmarkResult:
        """Run one benchmark and return its headline score."""
        return self.run_suite(model_path, [config])[0]

    def run_suite(self, model_path: str | Path, configs: list[BenchmarkConfig]) -> list[BenchmarkResult]:
        """Run several benchmarks on one model (the model is loaded once for the whole suite)."""
        if not configs:
            return []
        configs = [c if isinstance(c, BenchmarkConfig) else BenchmarkConfig.model_validate(c) for c in configs]
        model_args = _model_args(Path(model_path), self.base_model, self.dtype, self.model_kwargs)
        try:
            import lm_eval
            from lm_eval.tasks import TaskManager
        except ImportError as exc:
            raise DependencyError("benchmarks need lm-eval: pip install 'provenir[benchmarks]'") from exc

        wanted = {BENCHMARKS[c.benchmark].task if c.benchmark in BENCHMARKS else c.benchmark for c in configs}
        task_manager = _task_manager(TaskManager, self.task_dirs, wanted)
        known = set(task_manager.all_tasks)
        results: list[BenchmarkResult] = []
        lm = None
        for config in configs:
            spec = BENCHMARKS.get(config.benchmark)
            task = spec.task if spec else config.benchmark
            if task not in known:
                raise BenchmarkError(
                    f"unknown benchmark {config.benchmark!r}: use one of {sorted(BENCHMARKS)} or an lm-eval task name"
                )
            if lm is None:
                lm = self._load_model(lm_eval, model_args)
            try:
                with _quiet_git_probe():
                    output = lm_eval.simple_evaluate(
                        model=lm,
                        tasks=[task],
                        num_fewshot=config.num_fewshot,
                        limit=config.limit,
                        task_manager=task_manager,
                        log_samples=False,
                        bootstrap_iters=100,
                        random_seed=self.seed,
                        numpy_random_seed=self.seed,
                        torch_random_seed=self.seed,
                        fewshot_random_seed=self.seed,
                    )
            except ProvenirError:
                raise
            except Exception as exc:  # noqa: BLE001 - lm-eval/datasets raise many types
                raise self._explain(config.benchmark, exc) from exc
            results.append(self._result(config, task, spec, output, model_args))
        return results

    def _load_model(self, lm_eval: Any, model_args: str) -> Any:
        from lm_eval.api.registry import get_model

        try:
            return get_model("hf").create_from_arg_string(
                model_args, {"batch_size": self.batch_size, "device": self.device}
            )
        except Exception as exc:  # noqa: BLE001
            raise BenchmarkError(f"lm-eval could not load the model ({model_args}): {exc}") from exc

    @staticmethod
    def _explain(benchmark: str, exc: Exception) -> BenchmarkError:
        text = f"{type(exc).__name__}: {exc}"
        offline_markers = ("offline", "Couldn't reach", "ConnectionError", "LocalEntryNotFound", "not find", "HF_HUB_OFFLINE")
        if any(marker.lower() in text.lower() for marker in offline_markers):
            return BenchmarkError(
                f"benchmark {benchmark!r} needs its dataset from the Hugging Face hub, which is unreachable here "
                f"({text[:200]}). Run where the hub is reachable, pre-fill the datasets cache, or use a shipped "
                "offline task (provenir_arith, provenir_copy) or your own task_dirs="
            )
        return BenchmarkError(f"benchmark {benchmark!r} failed in lm-eval: {text[:500]}")

    @staticmethod
    def _result(
        config: BenchmarkConfig, task: str, spec: BenchmarkSpec | None, output: dict[str, Any] | None, model_args: str
    ) -> BenchmarkResult:
        if not output or "results" not in output:
            raise BenchmarkError(f"benchmark {config.benchmark!r}: lm-eval returned no results")
        all_results = output["results"]
        task_results = all_results.get(task) or next(iter(all_results.values()))
        key, score, stderr = _pick_metric(task_results, spec.metric if spec else None)
        n_samples = output.get("n-samples", {})
        if task in n_samples:
            num_examples = int(n_samples[task].get("effective", 0))
        else:
            num_examples = sum(int(v.get("effective", 0)) for v in n_samples.values())
        metrics = {
            k: float(v)
            for k, v in task_results.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and k != "sample_len"
        }
        return BenchmarkResult(
            benchmark=config.benchmark,
            score=score,
            num_examples=num_examples,
            config=config,
            metric=key,
            stderr=stderr,
            metrics=metrics,
            task=task,
            model_args=model_args,
        )


def list_benchmarks() -> dict[str, str]:
    """``{name: description}`` of the named benchmarks."""
    return {name: spec.description for name, spec in BENCHMARKS.items()}


def shipped_task_dir() -> Path:
    """Where the offline task YAMLs live (copy one to start your own)."""
    return SHIPPED_TASKS_DIR

