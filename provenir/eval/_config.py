"""The eval config file (``provenir eval CONFIG``) and prediction files.

.. code-block:: yaml

    dataset: data/eval.jsonl          # records with the reference in `reference_field`
    predictions: out/predictions.jsonl
    baseline: out/baseline.jsonl      # optional: paired comparison, predictions (B) vs baseline (A)
    metrics: [exact_match, token_f1, rouge_l, "regex:^\\d+$"]
    reference_field: output
    prediction_field: prediction
    n_resamples: 1000
    confidence: 0.95
    seed: 0

Relative paths are resolved against the config file's folder. Prediction files: ``.jsonl`` (one
object per line holding ``prediction_field``, or one JSON string per line), ``.json`` (a list of
strings) or plain text (one prediction per line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from provenir.core.errors import ConfigError, DataError

__all__ = ["EvalConfig", "load_eval_config", "read_predictions"]


class EvalConfig(BaseModel):
    """What ``provenir eval`` scores, and how."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    predictions: str
    baseline: str | None = None
    metrics: list[str] = Field(default_factory=lambda: ["exact_match", "token_f1", "rouge_l"])
    reference_field: str = "output"
    prediction_field: str = "prediction"
    n_resamples: int = Field(default=1000, ge=1)
    confidence: float = Field(default=0.95, gt=0.0, lt=1.0)
    seed: int = 0


def load_eval_config(path: str | Path) -> EvalConfig:
    """Read and validate an eval config YAML; relative paths become relative to its folder."""
    from provenir.core.yaml_safe import load_yaml, read_yaml_text

    path = Path(path)
    text = read_yaml_text(path, kind="eval config")
    raw = load_yaml(text, source=str(path))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping with dataset, predictions, metrics, …")
    try:
        config = EvalConfig.model_validate(raw)
    except ValidationError as exc:
        from provenir.core.config import key_lines, shown

        first = exc.errors()[0]
        loc = tuple(first["loc"])
        where = ".".join(str(p) for p in loc) or "(root)"
        line = key_lines(text).get(loc[:1])
        message = first["msg"]
        if first["type"] == "extra_forbidden":
            message = f"unknown key; allowed keys: {', '.join(EvalConfig.model_fields)}"
        elif first["type"] == "missing":
            message = "required: add it to the file"
        else:
            message = f"{message} (got {shown(first.get('input'))})"
        raise ConfigError(f"{path}{f':{line}' if line else ''}: {where}: {message}") from None
    base = path.parent
    updates: dict[str, Any] = {}
    for key in ("dataset", "predictions", "baseline"):
        value = getattr(config, key)
        if value is not None and not Path(value).is_absolute():
            updates[key] = str(base / value)
    return config.model_copy(update=updates)


def read_predictions(path: str | Path, field: str = "prediction") -> list[str]:
    """Predictions from ``.jsonl``, ``.json`` or a text file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such predictions file")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise DataError(f"{path}: expected a JSON list of strings")
        return data
    if path.suffix == ".jsonl":
        out: list[str] = []
        with path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
                if isinstance(value, dict):
                    if field not in value:
                        raise DataError(f"{path}:{number}: no {field!r} field; set prediction_field")
                    value = value[field]
                if value is None:
                    value = ""
                if not isinstance(value, str):
                    raise DataError(f"{path}:{number}: the prediction must be a string")
                out.append(value)
        return out
    return path.read_text(encoding="utf-8").splitlines()
