"""Reading and checking PEFT LoRA adapter folders, without loading the base model.

A LoRA adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors``. For every
adapted module the safetensors file has a pair ``<module>.lora_A.weight`` (r x in) and
``<module>.lora_B.weight`` (out x r) (``lora_embedding_A``/``lora_embedding_B`` for embeddings);
the module's weight update is ``ΔW = scaling · B @ A`` with ``scaling = lora_alpha / r`` (or
``lora_alpha / sqrt(r)`` with rsLoRA), per-module ``rank_pattern``/``alpha_pattern`` respected.
Everything here reads tensors lazily, one module at a time, so merging adapters of a large model
needs memory for one module's update, not for the model.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provenir.core.errors import ConfigError
from provenir.core.hashing import sha256_file

if TYPE_CHECKING:
    import torch

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
_PREFIX = "base_model.model."
_PAIR = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_A|lora_B)\.weight$")
_EMBED_PAIR = re.compile(r"^(?P<module>.+)\.(?P<kind>lora_embedding_A|lora_embedding_B)$")
#: Full base weights PEFT saves beside embedding LoRAs (``save_embedding_layers``): copied through,
#: and only when every adapter holds the same values.
_PASSTHROUGH = re.compile(r"^.+\.base_layer\.weight$")


@dataclass(frozen=True)
class LoraModule:
    """One adapted module of one adapter: where its factors are and how they are scaled."""

    name: str
    a_key: str
    b_key: str
    rank: int
    in_features: int
    out_features: int
    scaling: float
    embedding: bool


@dataclass
class LoraAdapter:
    """A validated LoRA adapter folder (config parsed, tensor layout read, nothing else loaded)."""

    path: Path
    config: dict[str, Any]
    modules: dict[str, LoraModule]
    dtype: str
    files_sha256: dict[str, str] = field(default_factory=dict)
    passthrough: list[str] = field(default_factory=list)

    @property
    def base_model(self) -> str | None:
        return self.config.get("base_model_name_or_path")

    @property
    def rank(self) -> int:
        return int(self.config.get("r", 0))

    def factors(self, name: str, handle: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(A, B)`` of module ``name`` read from an open ``safe_open`` handle."""
        module = self.modules[name]
        return handle.get_tensor(module.a_key), handle.get_tensor(module.b_key)


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rule for ``rank_pattern``/``alpha_pattern``: the key that matches the module name."""
    if not patterns:
        return default
    try:
        from peft.utils.other import get_pattern_key
    except ImportError:  # pragma: no cover - older PEFT: exact suffix match
        for key in patterns:
            if module == key or module.endswith(f".{key}"):
                return patterns[key]
        return default
    key = get_pattern_key(list(patterns), module)
    return patterns.get(key, default)


def load_adapter(path: Path) -> LoraAdapter:
    """Read and check one adapter folder; every problem raises a :class:`ConfigError` saying how to fix it."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: adapter folder not found")
    if not path.is_dir():
        raise ConfigError(f"{path}: not a folder; pass the folder a PEFT adapter was saved to")
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise ConfigError(
            f"{path}: no {CONFIG_NAME}; this is not a PEFT adapter folder "
            "(save one with PeftModel.save_pretrained)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{config_file}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{config_file}: expected a JSON object")
    peft_type = str(config.get("peft_type", "")).upper()
    if peft_type != "LORA":
        raise ConfigError(
            f"{config_file}: peft_type is {config.get('peft_type')!r}; only LoRA adapters can be merged"
        )
    if config.get("use_dora"):
        raise ConfigError(
            f"{config_file}: use_dora is true; DoRA's magnitude vectors cannot be merged as weight "
            "updates. Merge plain LoRA adapters, or merge each DoRA adapter into the base first"
        )
    if config.get("lora_bias"):
        raise ConfigError(f"{config_file}: lora_bias is true; adapters with LoRA biases cannot be merged")
    weights_file = path / WEIGHTS_NAME
    if not weights_file.is_file():
        if (path / PICKLE_WEIGHTS_NAME).is_file():
            raise ConfigError(
                f"{path}: only {PICKLE_WEIGHTS_NAME} (pickle) found; Provenir loads safetensors only. "
                "Re-save it with save_pretrained(..., safe_serialization=True)"
            )
        raise ConfigError(f"{path}: no {WEIGHTS_NAME}")

    rank_default = int(config.get("r", 8))
    alpha_default = float(config.get("lora_alpha", rank_default))
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora"))

    pairs: dict[str, dict[str, str]] = {}
    embedding: set[str] = set()
    other: list[str] = []
    passthrough: list[str] = []
    dtypes: set[str] = set()
    shapes: dict[str, tuple[int, ...]] = {}
    try:
        with safe_open(str(weights_file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                match = _PAIR.match(key) or _EMBED_PAIR.match(key)
                if match is None:
                    (passthrough if _PASSTHROUGH.match(key) else other).append(key)
                    continue
                kind = match["kind"]
                if kind.startswith("lora_embedding"):
                    embedding.add(match["module"])
                pairs.setdefault(match["module"], {})[kind[-1]] = key
                tensor_slice = handle.get_slice(key)
                shapes[key] = tuple(tensor_slice.get_shape())
                dtypes.add(str(tensor_slice.get_dtype()))
    except Exception as exc:  # safetensors raises its own error types
        raise ConfigError(f"{weights_file}: cannot be read as safetensors ({exc})") from exc
    if other:
        raise ConfigError(
            f"{weights_file}: holds tensors that are not LoRA factors ({', '.join(sorted(other)[:3])}"
            f"{', …' if len(other) > 3 else ''}); adapters with modules_to_save, biases or other "
            "trained weights cannot be merged as LoRA updates"
        )
    if not pairs:
        raise ConfigError(f"{weights_file}: holds no LoRA factors")

    modules: dict[str, LoraModule] = {}
    for module_key, kinds in sorted(pairs.items()):
        if set(kinds) != {"A", "B"}:
            raise ConfigError(f"{weights_file}: module {module_key} has lora_A or lora_B but not both")
        a_shape, b_shape = shapes[kinds["A"]], shapes[kinds["B"]]
        if len(a_shape) != 2 or len(b_shape) != 2:
            raise ConfigError(
                f"{weights_file}: module {module_key} has {len(a_shape)}-d factors; only linear and "
                "embedding LoRA layers can be merged (not convolutions)"
            )
        rank = a_shape[0]
        if b_shape[1] != rank:
            raise ConfigError(f"{weights_file}: module {module_key}: lora_B {b_shape} does not match lora_A {a_shape}")
        name = module_key[len(_PREFIX) :] if module_key.startswith(_PREFIX) else module_key
        alpha = float(_pattern_value(alpha_pattern, name, alpha_default))
        expected_rank = int(_pattern_value(rank_pattern, name, rank_default))
        if expected_rank != rank:
            raise ConfigError(
                f"{path}: module {name} has rank {rank} in {WEIGHTS_NAME} but {expected_rank} in {CONFIG_NAME}"
            )
        scaling = alpha / math.sqrt(rank) if rslora else alpha / rank
        modules[module_key] = LoraModule(
            name=module_key,
            a_key=kinds["A"],
            b_key=kinds["B"],
            rank=rank,
            in_features=a_shape[1],
            out_features=b_shape[0],
            scaling=scaling,
            embedding=module_key in embedding,
        )
    if len(dtypes) != 1:
        raise ConfigError(f"{weights_file}: factors have mixed dtypes {sorted(dtypes)}")
    files = {
        CONFIG_NAME: sha256_file(config_file),
        WEIGHTS_NAME: sha256_file(weights_file),
    }
    return LoraAdapter(
        path=path,
        config=config,
        modules=modules,
        dtype=dtypes.pop(),
        files_sha256=files,
        passthrough=sorted(passthrough),
    )


def check_compatible(adapters: list[LoraAdapter], *, check_base_model: bool = True) -> None:
    """Raise a :class:`ConfigError` saying why ``adapters`` cannot be merged, if they cannot."""
    first = adapters[0]
    for other in adapters[1:]:
        if check_base_model and other.base_model != first.base_model:
            raise ConfigError(
                f"adapters were trained on different base models: {first.path} on "
                f"{first.base_model!r}, {other.path} on {other.base_model!r}. Merging needs one base; "
                "if both names refer to the same weights, pass check_base_model=False"
            )
        if bool(other.config.get("fan_in_fan_out")) != bool(first.config.get("fan_in_fan_out")):
            raise ConfigError(f"{first.path} and {other.path} differ in fan_in_fan_out; they adapt different layouts")
        missing = sorted(set(first.modules) - set(other.modules))
        extra = sorted(set(other.modules) - set(first.modules))
        if missing or extra:
            detail = []
            if missing:
                detail.append(f"only in {first.path}: {', '.join(_short(m) for m in missing[:4])}")
            if extra:
                detail.append(f"only in {other.path}: {', '.join(_short(m) for m in extra[:4])}")
            raise ConfigError(
                "adapters target different modules (" + "; ".join(detail) + "). Merge adapters trained "
                "with the same target_modules"
            )
        if other.passthrough != first.passthrough:
            raise ConfigError(
                f"{first.path} saves base weights {first.passthrough or 'none'} but {other.path} saves "
                f"{other.passthrough or 'none'}; save both with the same save_embedding_layers setting"
            )
        for name, module in first.modules.items():
            theirs = other.modules[name]
            if (module.in_features, module.out_features, module.embedding) != (
                theirs.in_features,
                theirs.out_features,
                theirs.embedding,
            ):
                raise ConfigError(
                    f"module {_short(name)} adapts a {module.out_features}x{module.in_features} weight in "
                    f"{first.path} but a {theirs.out_features}x{theirs.in_features} one in {other.path}; "
                    "the adapters were not trained on the same base architecture"
                )


def _short(module: str) -> str:
    return module[len(_PREFIX) :] if module.startswith(_PREFIX) else module


def find_run_manifest(adapter_path: Path) -> tuple[Path, dict[str, Any]] | None:
    """The Provenir run manifest beside an adapter (in its folder or the folder above), if any."""
    from provenir.core.store import MANIFEST_NAME

    for folder in (adapter_path, adapter_path.parent):
        candidate = folder / MANIFEST_NAME
        if candidate.is_file():
            try:
                data = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and "run_id" in data:
                return candidate, data
    return None


def provenance_summary(adapter_path: Path) -> dict[str, Any]:
    """The facts a run manifest beside ``adapter_path`` records about how the adapter was made."""
    found = find_run_manifest(adapter_path)
    if found is None:
        return {}
    manifest_path, data = found
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    summary = {
        "run_id": data.get("run_id"),
        "dataset_hash": data.get("dataset_hash"),
        "config_hash": data.get("config_hash"),
        "git_sha": data.get("git_sha"),
        "seed": data.get("seed"),
        "parents": data.get("provenance") or [],
        "base_model": config.get("model_name_or_path"),
        "manifest_sha256": sha256_file(manifest_path),
    }
    return {key: value for key, value in summary.items() if value not in (None, "")}
