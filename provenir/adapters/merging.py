"""Merge LoRA adapters trained on the same base model: SLERP, TIES, DARE — with provenance.

The merger reads PEFT adapter folders (``adapter_config.json`` + ``adapter_model.safetensors``)
directly, one module at a time; the base model is never loaded. For every adapted module it forms
each adapter's weight update ``ΔW_i = s_i · B_i @ A_i`` and combines them:

* ``slerp`` — two adapters, spherical interpolation row by row (mergekit's formula) with ``t`` the
  second adapter's share. The result lies in the span of the inputs, so it is written exactly as
  a LoRA of rank ``r_1 + r_2`` (factors concatenated), no approximation.
* ``ties`` — any number of adapters: keep the top ``density`` fraction of each update by magnitude,
  elect a sign per entry, average the weighted entries that agree (PEFT's ``ties``).
* ``dare`` — any number of adapters: drop entries at random with probability ``1 - density``,
  rescale survivors by ``1 / density``, then TIES sign election (``dare_variant="ties"``, default)
  or a weighted sum (``"linear"``) (PEFT's ``dare_ties`` / ``dare_linear``). Masks are seeded per
  module from ``seed``, so the same inputs and seed give the same bytes.

TIES and DARE make the update full-rank; it is factorised back to LoRA with a truncated SVD of rank
``rank`` (default: the sum of the inputs' ranks), and the relative error of that step is recorded.
``scale`` multiplies the merged update. The output folder is a PEFT adapter (loadable with
``PeftModel.from_pretrained``) plus ``merge_manifest.json``: the inputs' sha256, the strategy and
parameters, and the output files' sha256 — the merged adapter traces back to its parents. It is
written to a temporary folder and renamed into place, so a crash leaves no half-written adapter.
With ``output="model"`` the merged adapter is also folded into the base weights and the folder is a
standalone model (the adapter kept in ``adapter/``).

Example:
    >>> from provenir.adapters.merging import MergeConfig, ModelMerger
    >>> result = ModelMerger().merge([a, b], MergeConfig(strategy="ties", density=0.5), out)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from provenir.core.errors import ConfigError, ProvenirError, require
from provenir.core.hashing import sha256_file, sha256_json
from provenir.core.io import atomic_write_text

if TYPE_CHECKING:
    import torch

    from provenir.adapters._lora import LoraAdapter

__all__ = ["MERGE_MANIFEST_NAME", "MergeConfig", "MergeResult", "ModelMerger", "record_merge_run", "verify_merge"]

MERGE_MANIFEST_NAME = "merge_manifest.json"
MANIFEST_FORMAT = "provenir.merge"
MANIFEST_VERSION = 1
_DTYPES = {"float32", "float16", "bfloat16", "float64"}
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}


class MergeConfig(BaseModel):
    """How to merge adapters.

    Attributes:
        strategy: ``"slerp"`` (exactly two adapters), ``"ties"`` or ``"dare"`` (two or more).
        density: TIES/DARE: the fraction of each update's entries kept, in (0, 1].
        scale: post-merge factor applied to the merged update.
        weights: per-adapter weights for TIES/DARE (default 1.0 each). TIES averages the weighted
            entries that agree in sign; DARE-linear sums them.
        t: SLERP: the second adapter's share, in [0, 1] (0 is the first adapter, 1 the second).
        seed: DARE's random masks are drawn from it (per module), so merges are reproducible.
        rank: rank of the output LoRA. Default: the sum of the inputs' ranks (exact for SLERP;
            TIES/DARE are truncated by SVD to it, and the error is recorded).
        majority_sign_method: TIES/DARE-TIES sign election: ``"total"`` (sum) or ``"frequency"``.
        dare_variant: ``"ties"`` (DARE then sign election) or ``"linear"`` (DARE then weighted sum).
        dtype: output dtype (default: the inputs' dtype). Arithmetic runs in float32 (float64 for
            float64 inputs).
        device: where the arithmetic runs (``"cpu"``, ``"cuda"``…); DARE masks are reproducible on
            the same device type.
        check_base_model: refuse adapters whose ``base_model_name_or_path`` differ.
        output: ``"adapter"`` (a PEFT LoRA folder) or ``"model"``: the merged adapter folded into
            the base weights (PEFT's ``merge_and_unload``), saved as a standalone safetensors model
            with the base's tokenizer; the merged adapter is kept in its ``adapter/`` subfolder.
        base_model: the base to fold into for ``output="model"`` (a folder or a hub id); default
            the adapters' ``base_model_name_or_path``.
    """

    model_config = ConfigDict(extra="forbid")

    strategy: Literal["slerp", "ties", "dare"] = "slerp"
    density: float = 0.5
    scale: float = 1.0
    weights: list[float] | None = None
    t: float = Field(default=0.5, ge=0.0, le=1.0)
    seed: int = 0
    rank: int | None = Field(default=None, ge=1)
    majority_sign_method: Literal["total", "frequency"] = "total"
    dare_variant: Literal["ties", "linear"] = "ties"
    dtype: str | None = None
    device: str = "cpu"
    check_base_model: bool = True
    output: Literal["adapter", "model"] = "adapter"
    base_model: str | None = None

    @field_validator("density")
    @classmethod
    def _density_range(cls, value: float) -> float:
        if not (0.0 < value <= 1.0) or not math.isfinite(value):
            raise ValueError(f"density must be in (0, 1] (the fraction of weights kept), got {value}")
        return value

    @field_validator("scale")
    @classmethod
    def _scale_finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError(f"scale must be a finite number, got {value}")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_finite(cls, value: list[float] | None) -> list[float] | None:
        if value is not None:
            if not value:
                raise ValueError("weights must not be empty (leave it out for 1.0 each)")
            if not all(math.isfinite(w) for w in value):
                raise ValueError(f"weights must be finite numbers, got {value}")
        return value

    @field_validator("dtype")
    @classmethod
    def _dtype_known(cls, value: str | None) -> str | None:
        if value is not None and value not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {value!r}")
        return value

    @model_validator(mode="after")
    def _weights_for_strategy(self) -> MergeConfig:
        if self.strategy == "slerp" and self.weights is not None:
            raise ValueError("slerp takes t (the second adapter's share), not weights")
        return self


@dataclass
class MergeResult:
    """Where the merged adapter went and what it was made from.

    The first three fields are the public contract; the rest record the output's rank, the
    manifest, the output files' sha256 and a merge id (sha256 over the inputs and parameters).
    """

    output_path: Path
    strategy: str
    adapter_paths: list[Path]
    rank: int | None = None
    manifest_path: Path | None = None
    files_sha256: dict[str, str] = field(default_factory=dict)
    merge_id: str | None = None
    svd_relative_error_max: float = 0.0


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    return {
        "float32": torch.float32,
        "float16": torch.float16,
        "bfloat16": torch.bfloat16,
        "float64": torch.float64,
    }[name]


def _resolve_config(config: MergeConfig | dict[str, Any]) -> MergeConfig:
    if isinstance(config, MergeConfig):
        return config
    try:
        return MergeConfig.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "config"
        raise ConfigError(f"merge config: {where}: {first['msg']}") from exc


def _output_config(first: LoraAdapter, rank: int) -> dict[str, Any]:
    config = dict(first.config)
    config.update(
        r=rank,
        lora_alpha=rank,  # scaling 1: the factors carry the whole update
        use_rslora=False,
        rank_pattern={},
        alpha_pattern={},
        use_dora=False,
    )
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return config


def _software() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("provenir", "torch", "peft", "safetensors"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


class ModelMerger:
    """Merges PEFT LoRA adapters into one adapter folder with a provenance manifest.

    Example:
        >>> merger = ModelMerger()
        >>> merger.merge([Path("a"), Path("b")], MergeConfig(strategy="slerp"), Path("out"))  # doctest: +SKIP
    """

    def merge(
        self,
        adapter_paths: list[Path],
        config: MergeConfig,
        output_dir: Path,
        *,
        overwrite: bool = False,
    ) -> MergeResult:
        """Merge ``adapter_paths`` as ``config`` says and write the result to ``output_dir``.

        Args:
            adapter_paths: PEFT LoRA adapter folders trained on the same base model.
            config: the strategy and its parameters.
            output_dir: the merged adapter's folder (created; must not exist or be empty unless
                ``overwrite``).
            overwrite: replace an existing, non-empty ``output_dir``.

        Raises:
            ConfigError: inputs that cannot be merged (with the reason), bad parameters, an
                occupied output folder.
            DependencyError: torch/PEFT/safetensors missing (``pip install 'provenir[merge]'``).
        """
        config = _resolve_config(config)
        paths = [Path(p) for p in adapter_paths]
        output_dir = Path(output_dir)
        self._check_arguments(paths, config, output_dir, overwrite)
        feature = f"MergeConfig(strategy={config.strategy!r})"
        for module in ("torch", "peft", "safetensors"):
            require(module, feature=feature, extra="merge")

        from provenir.adapters._lora import check_compatible, load_adapter

        adapters = [load_adapter(path) for path in paths]
        check_compatible(adapters, check_base_model=config.check_base_model)
        return self._merge(adapters, config, output_dir, overwrite)

    @staticmethod
    def _check_arguments(paths: list[Path], config: MergeConfig, output_dir: Path, overwrite: bool) -> None:
        if config.strategy == "slerp" and len(paths) != 2:
            raise ConfigError(f"slerp merges exactly two adapters, got {len(paths)}; use ties or dare for more")
        if len(paths) < 2:
            raise ConfigError(f"merging needs at least two adapters, got {len(paths)}")
        if config.weights is not None and len(config.weights) != len(paths):
            raise ConfigError(f"weights has {len(config.weights)} values for {len(paths)} adapters; give one per adapter")
        resolved = [p.resolve() for p in paths]
        if len(set(resolved)) != len(resolved):
            raise ConfigError("the same adapter is listed twice; merging an adapter with itself is a no-op")
        out = output_dir.resolve()
        for src in resolved:
            if out == src or src in out.parents:
                raise ConfigError(f"output folder {output_dir} is inside input adapter {src}; choose another folder")
        if output_dir.exists():
            if not output_dir.is_dir():
                raise ConfigError(f"output {output_dir} exists and is not a folder")
            if any(output_dir.iterdir()) and not overwrite:
                raise ConfigError(f"output folder {output_dir} is not empty; choose another or pass overwrite=True (--overwrite)")

    def _merge(
        self, adapters: list[LoraAdapter], config: MergeConfig, output_dir: Path, overwrite: bool
    ) -> MergeResult:
        import torch
        from safetensors import safe_open
        from safetensors.torch import save_file

        from provenir.adapters._lora import CONFIG_NAME, WEIGHTS_NAME, provenance_summary
        from provenir.adapters._strategies import STRATEGIES, ModuleInputs, StrategyParams, factorize

        first = adapters[0]
        weights = list(config.weights) if config.weights is not None else [1.0] * len(adapters)
        rank = config.rank or sum(max(m.rank for m in a.modules.values()) for a in adapters)
        in_name = _SAFETENSORS_DTYPES.get(first.dtype.upper())
        in_dtype = _torch_dtype(in_name) if in_name else None
        out_dtype = _torch_dtype(config.dtype) if config.dtype else (in_dtype or torch.float32)
        compute = torch.float64 if in_dtype == torch.float64 else torch.float32
        try:
            device = torch.device(config.device)
        except RuntimeError as exc:
            raise ConfigError(f"device {config.device!r} is not a torch device ({exc})") from exc
        params = StrategyParams(
            weights=weights,
            density=config.density,
            t=config.t,
            seed=config.seed,
            majority_sign_method=config.majority_sign_method,
            dare_variant=config.dare_variant,
        )
        strategy = STRATEGIES[config.strategy]

        merged: dict[str, torch.Tensor] = {}
        errors: list[float] = []
        handles = [safe_open(str(a.path / WEIGHTS_NAME), framework="pt", device="cpu") for a in adapters]
        with torch.no_grad():
            for name in sorted(first.modules):
                factors = [a.factors(name, h) for a, h in zip(adapters, handles)]
                inputs = ModuleInputs(
                    name=name,
                    a=[f[0].to(device=device, dtype=compute) for f in factors],
                    b=[f[1].to(device=device, dtype=compute) for f in factors],
                    scaling=[a.modules[name].scaling for a in adapters],
                    embedding=first.modules[name].embedding,
                )
                result = strategy(inputs, params)
                if result.dense is not None:
                    a_out, b_out, error = factorize(result.dense, rank)
                    errors.append(error)
                else:
                    assert result.a is not None and result.b is not None
                    a_out, b_out = result.a, result.b
                    if a_out.shape[0] > rank:
                        a_out, b_out, error = factorize(b_out @ a_out, rank)
                        errors.append(error)
                    elif a_out.shape[0] < rank:
                        pad = rank - a_out.shape[0]
                        a_out = torch.cat([a_out, a_out.new_zeros(pad, a_out.shape[1])], dim=0)
                        b_out = torch.cat([b_out, b_out.new_zeros(b_out.shape[0], pad)], dim=1)
                b_out = b_out * config.scale
                module = first.modules[name]
                merged[module.a_key] = a_out.to(device="cpu", dtype=out_dtype).contiguous()
                merged[module.b_key] = b_out.to(device="cpu", dtype=out_dtype).contiguous()
            for key in first.passthrough:
                tensor = handles[0].get_tensor(key)
                for adapter, handle in zip(adapters[1:], handles[1:]):
                    if not torch.equal(tensor, handle.get_tensor(key)):
                        raise ConfigError(
                            f"{key} (a base weight saved with the adapter) differs between {first.path} "
                            f"and {adapter.path}; the adapters were not trained on the same base weights"
                        )
                merged[key] = tensor.contiguous()
        del handles

        parameters = {
            "density": config.density,
            "scale": config.scale,
            "weights": weights if config.strategy != "slerp" else None,
            "t": config.t if config.strategy == "slerp" else None,
            "seed": config.seed if config.strategy == "dare" else None,
            "rank": rank,
            "majority_sign_method": config.majority_sign_method if config.strategy != "slerp" else None,
            "dare_variant": config.dare_variant if config.strategy == "dare" else None,
            "dtype": str(out_dtype).replace("torch.", ""),
            "device_type": device.type,
            "output": config.output,
            "fold_base_model": (config.base_model or first.base_model) if config.output == "model" else None,
        }
        inputs_record = [
            {
                "path": str(a.path.resolve()),
                "files": a.files_sha256,
                "base_model": a.base_model,
                "r": a.rank,
                "lora_alpha": a.config.get("lora_alpha"),
                "use_rslora": bool(a.config.get("use_rslora")),
                "provenance": provenance_summary(a.path.resolve()),
            }
            for a in adapters
        ]
        merge_id = sha256_json(
            {
                "strategy": config.strategy,
                "parameters": parameters,
                "inputs": [a.files_sha256 for a in adapters],
            }
        )

        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp", dir=output_dir.parent))
        try:
            save_file(dict(sorted(merged.items())), str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            atomic_write_text(
                tmp / CONFIG_NAME, json.dumps(_output_config(first, rank), indent=2, sort_keys=True) + "\n"
            )
            if config.output == "model":
                adapter_dir = tmp / "adapter"
                adapter_dir.mkdir()
                for name in (CONFIG_NAME, WEIGHTS_NAME):
                    os.replace(tmp / name, adapter_dir / name)
                _fold_into_base(adapter_dir, config.base_model or first.base_model, out_dtype, tmp)
            files = {
                path.relative_to(tmp).as_posix(): sha256_file(path)
                for path in sorted(tmp.rglob("*"))
                if path.is_file() and path.name != MERGE_MANIFEST_NAME
            }
            manifest = {
                "format": MANIFEST_FORMAT,
                "version": MANIFEST_VERSION,
                "merge_id": merge_id,
                "strategy": config.strategy,
                "parameters": parameters,
                "base_model": first.base_model,
                "inputs": inputs_record,
                "output": {"kind": config.output, "files": files, "rank": rank, "modules": len(first.modules)},
                "svd_relative_error": {
                    "max": max(errors, default=0.0),
                    "mean": (sum(errors) / len(errors)) if errors else 0.0,
                    "modules_factorised": len(errors),
                },
                "software": _software(),
            }
            atomic_write_text(tmp / MERGE_MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            _move_into_place(tmp, output_dir, overwrite)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return MergeResult(
            output_path=output_dir,
            strategy=config.strategy,
            adapter_paths=[a.path for a in adapters],
            rank=rank,
            manifest_path=output_dir / MERGE_MANIFEST_NAME,
            files_sha256=files,
            merge_id=merge_id,
            svd_relative_error_max=max(errors, default=0.0),
        )


def _fold_into_base(adapter_dir: Path, base: str | None, dtype: torch.dtype, target: Path) -> None:
    """Load ``base``, apply the merged adapter, fold it into the weights and save the model in ``target``."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not base:
        raise ConfigError("output='model' needs the base model: the adapters name none; pass MergeConfig(base_model=...)")
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"output='model': the base model {base!r} cannot be loaded ({str(exc).splitlines()[0]}); "
            "pass MergeConfig(base_model=...) with its folder or hub id"
        ) from exc
    folded = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    folded.save_pretrained(str(target), safe_serialization=True)
    try:
        AutoTokenizer.from_pretrained(base).save_pretrained(str(target))
    except (OSError, ValueError):
        pass  # a base without a tokenizer still gives a usable model folder


def _move_into_place(tmp: Path, output_dir: Path, overwrite: bool) -> None:
    """Rename the finished temp folder to ``output_dir`` (replacing an old one only if allowed)."""
    if output_dir.exists():
        if any(output_dir.iterdir()) and not overwrite:
            raise ConfigError(f"output folder {output_dir} became non-empty during the merge")
        trash = output_dir.with_name(f".{output_dir.name}.old-{os.getpid()}")
        os.replace(output_dir, trash)
        try:
            os.replace(tmp, output_dir)
        except BaseException:
            os.replace(trash, output_dir)
            raise
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, output_dir)


def record_merge_run(
    store: Any,
    result: MergeResult,
    config: MergeConfig | dict[str, Any],
    *,
    provenance: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    command: list[str] | None = None,
) -> Any:
    """Record a merge as a run (``kind = "merge"``) in an :class:`~provenir.core.store.ArtifactStore`.

    Its parents are the runs the input adapters came from (found beside each adapter, as
    :func:`merge_manifest.json <verify_merge>` records them) plus ``provenance``; its inputs are the
    adapter folders, hashed file by file (``verify_run`` re-hashes them); its artifacts are the merged
    folder under ``adapter/`` and ``merge_manifest.json``, each with its sha256. So ``provenir
    manifest lineage`` walks from the merged adapter back through the runs that trained its parents.

    Returns the finished :class:`~provenir.core.abstractions.RunManifest`.
    """
    from provenir.core.config import RunConfig
    from provenir.core.run import RunRecorder, describe_model

    config = _resolve_config(config)
    manifest = json.loads((result.output_path / MERGE_MANIFEST_NAME).read_text(encoding="utf-8"))
    parents: list[str] = []
    for entry in manifest.get("inputs", []):
        run_id = (entry.get("provenance") or {}).get("run_id") if isinstance(entry, dict) else None
        if isinstance(run_id, str) and run_id not in parents and store.exists(run_id):
            parents.append(run_id)
    for run_id in provenance:
        if run_id not in parents:
            parents.append(run_id)
    inputs: dict[str, Any] = {f"adapter:{i}": describe_model(str(Path(path).resolve()))
                              for i, path in enumerate(result.adapter_paths)}
    inputs["merge"] = {"strategy": result.strategy, "merge_id": result.merge_id,
                       "config": config.model_dump(mode="json")}
    run_config = RunConfig(name=name or f"merge-{result.strategy}", seed=config.seed)
    digest = sha256_json([inputs[f"adapter:{i}"].get("sha256") for i in range(len(result.adapter_paths))])
    recorder = RunRecorder(store, run_config, dataset_hash=digest, inputs=inputs, provenance=parents,
                           command=command)
    recorder.manifest.kind = "merge"
    shutil.copytree(result.output_path, recorder.workdir / "adapter", dirs_exist_ok=True)
    metrics = {"rank": result.rank, "svd_relative_error_max": result.svd_relative_error_max,
               "adapters": len(result.adapter_paths)}
    return recorder.finish({k: v for k, v in metrics.items() if v is not None})


def verify_merge(output_dir: Path) -> list[str]:
    """Check a merged adapter against its ``merge_manifest.json``; returns the problems (empty: ok).

    Checks that the output files still have the recorded sha256 and, where the input adapters are
    still at their recorded paths, that their files do too.
    """
    output_dir = Path(output_dir)
    manifest_path = output_dir / MERGE_MANIFEST_NAME
    if not manifest_path.is_file():
        raise ProvenirError(f"{output_dir}: no {MERGE_MANIFEST_NAME}; not a Provenir merge output")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProvenirError(f"{manifest_path}: not valid JSON ({exc})") from exc
    problems: list[str] = []
    for name, digest in sorted(manifest.get("output", {}).get("files", {}).items()):
        path = output_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{name}: sha256 differs from the manifest")
    for record in manifest.get("inputs", []):
        folder = Path(record.get("path", ""))
        for name, digest in sorted(record.get("files", {}).items()):
            path = folder / name
            if path.is_file() and sha256_file(path) != digest:
                problems.append(f"input {folder / name}: sha256 differs from the manifest (the parent changed)")
    return problems
