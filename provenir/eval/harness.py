"""Score predictions against references with several metrics, each with a bootstrap confidence interval.

:class:`MultiMetricEvaluator` computes every metric per example, keeps the per-example scores, and
reports the mean with a seeded, vectorised percentile bootstrap interval. :meth:`~MultiMetricEvaluator.compare`
scores two prediction sets on the same examples and bootstraps the paired difference, which is what
"B beats A" needs: the interval of ``mean(B) - mean(A)`` resampled jointly over examples.

Documented choices:

* The reference is each record's ``output`` field (``reference_field=`` changes it); a list of
  strings is several references (best score wins).
* Normalisation and empty predictions: see ``provenir.eval._metrics`` — SQuAD-style normalisation;
  an empty (or ``None``) prediction is scored, never dropped.
* ``n = 1`` (or all scores equal): the interval collapses to the mean (the bootstrap has nothing to
  resample). An empty dataset is an error.

Example:
    >>> from provenir.data.dataset import JsonlDataset
    >>> ds = JsonlDataset.from_records([{"instruction": "2+3?", "output": "5"}, {"instruction": "Capital of France?", "output": "Paris"}])
    >>> result = MultiMetricEvaluator(metrics=["exact_match"]).evaluate(ds, ["5", "paris."])
    >>> result.metrics["exact_match"]
    MetricResult(mean=1.0, ci_lower=1.0, ci_upper=1.0, n=2)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from provenir.core.errors import ConfigError, DataError
from provenir.eval._bootstrap import bootstrap_ci, bootstrap_means, check_bootstrap_args, percentile_interval
from provenir.eval._metrics import (
    METRIC_REGISTRY,
    RegexMatch,
    ScoreFn,
    contains,
    exact_match,
    register_metric,
    resolve_metric,
    token_f1,
)
from provenir.eval._text import normalize_answer

if TYPE_CHECKING:
    import numpy as np

    from provenir.data.dataset import JsonlDataset

__all__ = [
    "DEFAULT_METRICS",
    "METRIC_REGISTRY",
    "ComparisonResult",
    "EvalResult",
    "MetricResult",
    "MultiMetricEvaluator",
    "PairedDifference",
    "RegexMatch",
    "bootstrap_ci",
    "contains",
    "exact_match",
    "normalize_answer",
    "register_metric",
    "token_f1",
]

DEFAULT_METRICS: tuple[str, ...] = ("exact_match", "token_f1", "rouge_l")


@dataclass
class MetricResult:
    """One metric's mean over ``n`` examples and its bootstrap interval ``[ci_lower, ci_upper]``."""

    mean: float
    ci_lower: float
    ci_upper: float
    n: int


@dataclass
class EvalResult:
    """Every metric's result; ``per_example`` keeps each metric's score for every example."""

    metrics: dict[str, MetricResult]
    per_example: dict[str, list[float]] = field(default_factory=dict)
    confidence: float = 0.95
    n_resamples: int = 1000
    seed: int = 0

    def means(self) -> dict[str, float]:
        """``{metric: mean}`` (what training callbacks and manifests record)."""
        return {name: result.mean for name, result in self.metrics.items()}

    def to_dict(self, per_example: bool = False) -> dict[str, Any]:
        """A JSON-ready dict: the metrics, the bootstrap settings, and optionally per-example scores."""
        out: dict[str, Any] = {
            "metrics": {name: asdict(result) for name, result in self.metrics.items()},
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
        }
        if per_example:
            out["per_example"] = self.per_example
        return out

    def table(self) -> str:
        """A plain-text table: metric, mean, interval, n."""
        level = f"{self.confidence:.0%} CI"
        rows = [("metric", "mean", level, "n")]
        for name, r in self.metrics.items():
            rows.append((name, f"{r.mean:.4f}", f"[{r.ci_lower:.4f}, {r.ci_upper:.4f}]", str(r.n)))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


@dataclass
class PairedDifference:
    """``mean_b - mean_a`` over the same ``n`` examples with its paired bootstrap interval.

    ``p_value`` is the two-sided bootstrap p-value of "no difference" (twice the share of resampled
    differences on the far side of zero, at most 1); ``b_better`` / ``a_better`` say whether the
    whole interval lies above / below zero (never with a single example).
    """

    mean_a: float
    mean_b: float
    difference: float
    ci_lower: float
    ci_upper: float
    n: int
    p_value: float

    @property
    def b_better(self) -> bool:
        return self.n > 1 and self.ci_lower > 0.0

    @property
    def a_better(self) -> bool:
        return self.n > 1 and self.ci_upper < 0.0


@dataclass
class ComparisonResult:
    """Paired differences (B − A) per metric."""

    metrics: dict[str, PairedDifference]
    confidence: float = 0.95
    n_resamples: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "metrics": {
                name: {**asdict(d), "b_better": d.b_better, "a_better": d.a_better} for name, d in self.metrics.items()
            },
            "confidence": self.confidence,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
        }


MetricSpec = Any  # a registered name, "regex:PATTERN", an object with .score(), or a callable


class MultiMetricEvaluator:
    """Evaluate predictions with several metrics and percentile bootstrap confidence intervals.

    Args:
        metrics: names from :data:`METRIC_REGISTRY` (``exact_match``, ``token_f1``, ``contains``,
            ``rouge_l``, ``chrf``, ``bleu``), ``"regex:PATTERN"``, reward primitives (anything
            with ``.score(prediction, reference)``) or callables; a mapping gives them names.
            Default: :data:`DEFAULT_METRICS`.
        reference_field: the record field holding the reference (default ``output``).
        n_resamples: bootstrap resamples (default 1000).
        confidence: interval level (default 0.95).
        seed: bootstrap seed (same seed, same data: same interval).
    """

    def __init__(
        self,
        metrics: Sequence[MetricSpec] | Mapping[str, MetricSpec] | None = None,
        *,
        reference_field: str = "output",
        n_resamples: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
    ):
        check_bootstrap_args(n_resamples, confidence)
        if not reference_field:
            raise ConfigError("MultiMetricEvaluator(reference_field=...): must be a non-empty field name")
        if metrics is None:
            metrics = DEFAULT_METRICS
        if isinstance(metrics, str):
            metrics = [metrics]
        pairs: Iterable[tuple[str | None, MetricSpec]]
        if isinstance(metrics, Mapping):
            pairs = list(metrics.items())
        else:
            pairs = [(None, spec) for spec in metrics]
        self._metrics: dict[str, ScoreFn] = {}
        for name, spec in pairs:
            resolved_name, fn = resolve_metric(spec, name)
            if resolved_name in self._metrics:
                raise ConfigError(f"metric {resolved_name!r} given twice; name them with a dict")
            self._metrics[resolved_name] = fn
        if not self._metrics:
            raise ConfigError("MultiMetricEvaluator: give at least one metric")
        self.reference_field = reference_field
        self.n_resamples = n_resamples
        self.confidence = float(confidence)
        self.seed = seed

    @property
    def metric_names(self) -> list[str]:
        return list(self._metrics)

    def references(self, dataset: JsonlDataset | Sequence[Mapping[str, Any]]) -> list[str | list[str]]:
        """The reference of every record (a string, or a list of strings)."""
        refs: list[str | list[str]] = []
        for index, record in enumerate(dataset):
            if not isinstance(record, Mapping) or self.reference_field not in record:
                raise DataError(
                    f"record {index}: no {self.reference_field!r} field to use as the reference; "
                    "name the field that holds it (reference_field=, --reference-field, or "
                    "reference_field: in an eval config)"
                )
            ref = record[self.reference_field]
            if isinstance(ref, str) or (isinstance(ref, list) and ref and all(isinstance(r, str) for r in ref)):
                refs.append(ref)
            else:
                raise DataError(
                    f"record {index}: field {self.reference_field!r} must be a string or a non-empty list of strings"
                )
        return refs

    def score(
        self, dataset: JsonlDataset | Sequence[Mapping[str, Any]], predictions: Sequence[str | None]
    ) -> dict[str, np.ndarray]:
        """Per-example scores of every metric, ``{metric: array of len(dataset)}``."""
        import numpy as np

        refs = self.references(dataset)
        preds = _check_predictions(predictions, len(refs))
        out: dict[str, np.ndarray] = {}
        for name, fn in self._metrics.items():
            values = np.empty(len(refs), dtype=np.float64)
            for i, (pred, ref) in enumerate(zip(preds, refs)):
                if isinstance(ref, list):
                    value = max(float(fn(pred, r)) for r in ref)
                else:
                    value = float(fn(pred, ref))
                if not math.isfinite(value):
                    raise DataError(f"metric {name!r} returned {value} for example {i}; metrics must be finite")
                values[i] = value
            out[name] = values
        return out

    def evaluate(
        self, dataset: JsonlDataset | Sequence[Mapping[str, Any]], predictions: list[str]
    ) -> EvalResult:
        """Score ``predictions`` (one per record, in order) and bootstrap each metric's mean."""
        return self.summarize(self.score(dataset, predictions))

    def summarize(self, per_example: Mapping[str, Sequence[float] | np.ndarray]) -> EvalResult:
        """Bootstrap already computed per-example scores (all metrics share the resamples)."""
        import numpy as np

        names = list(per_example)
        matrix = np.vstack([np.asarray(per_example[n], dtype=np.float64) for n in names])
        n = matrix.shape[1]
        if n == 0:
            raise DataError("nothing to evaluate: the dataset is empty")
        means = matrix.mean(axis=1)
        if n == 1:
            lower, upper = means, means
        else:
            lower, upper = percentile_interval(bootstrap_means(matrix, self.n_resamples, self.seed), self.confidence)
        metrics = {}
        for i, name in enumerate(names):
            low, high = float(min(lower[i], means[i])), float(max(upper[i], means[i]))
            metrics[name] = MetricResult(float(means[i]), low, high, n)
        return EvalResult(
            metrics=metrics,
            per_example={name: matrix[i].tolist() for i, name in enumerate(names)},
            confidence=self.confidence,
            n_resamples=self.n_resamples,
            seed=self.seed,
        )

    def compare(
        self,
        dataset: JsonlDataset | Sequence[Mapping[str, Any]],
        predictions_a: Sequence[str | None],
        predictions_b: Sequence[str | None],
    ) -> ComparisonResult:
        """Paired comparison of two prediction sets on the same examples: B − A with its interval."""
        import numpy as np

        scores_a = self.score(dataset, predictions_a)
        scores_b = self.score(dataset, predictions_b)
        names = list(scores_a)
        diffs = np.vstack([scores_b[name] - scores_a[name] for name in names])
        n = diffs.shape[1]
        if n == 0:
            raise DataError("nothing to compare: the dataset is empty")
        mean_diff = diffs.mean(axis=1)
        if n == 1:
            lower, upper = mean_diff, mean_diff
            p_values = np.ones(len(names))  # one example is no evidence either way
        else:
            resampled = bootstrap_means(diffs, self.n_resamples, self.seed)
            lower, upper = percentile_interval(resampled, self.confidence)
            below = (resampled <= 0).mean(axis=1)
            above = (resampled >= 0).mean(axis=1)
            p_values = np.minimum(1.0, 2 * np.minimum(below, above))
        out = {}
        for i, name in enumerate(names):
            p = float(p_values[i])
            out[name] = PairedDifference(
                mean_a=float(scores_a[name].mean()),
                mean_b=float(scores_b[name].mean()),
                difference=float(mean_diff[i]),
                ci_lower=float(min(lower[i], mean_diff[i])),
                ci_upper=float(max(upper[i], mean_diff[i])),
                n=n,
                p_value=p,
            )
        return ComparisonResult(out, confidence=self.confidence, n_resamples=self.n_resamples, seed=self.seed)


def _check_predictions(predictions: Sequence[str | None], n: int) -> list[str]:
    if isinstance(predictions, str):
        raise DataError("predictions must be a list of strings, one per record, not a single string")
    preds = list(predictions)
    if len(preds) != n:
        raise DataError(f"got {len(preds)} predictions for {n} records; give exactly one prediction per record")
    out = []
    for index, pred in enumerate(preds):
        if pred is None:
            out.append("")
        elif isinstance(pred, str):
            out.append(pred)
        else:
            raise DataError(f"prediction {index}: expected a string, got {type(pred).__name__}")
    return out
