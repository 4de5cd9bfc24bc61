"""Model, adapter and tokenizer loading for the ``trl`` backend (LoRA, rsLoRA, QLoRA)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from provenir.core.errors import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def resolve_model_path(name_or_path: str | None) -> str:
    """A local model directory (checked) or a hub id (left to ``from_pretrained``).

    Raises:
        ConfigError: no model is configured, or a path that looks local does not exist or is not
            a model directory.
    """
    if not name_or_path:
        raise ConfigError(
            "model_name_or_path: required by the trl backend (a local model directory or a hub id); "
            "`provenir demo` shows how to build a tiny local one"
        )
    path = Path(name_or_path).expanduser()
    looks_local = (
        path.exists()
        or name_or_path.startswith((".", "/", "~"))
        or not _HUB_ID.match(name_or_path)
        or name_or_path.count("/") > 1
    )
    if not looks_local:
        return name_or_path
    if not path.exists():
        raise ConfigError(
            f"model_name_or_path: {name_or_path} does not exist; give a model directory "
            "(config.json + weights) or a hub id such as org/name"
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"model_name_or_path: {path} has no config.json; it is not a model directory")
    return str(path.resolve())


def bitsandbytes_unsupported_reason() -> str | None:
    """Why bitsandbytes cannot quantize here, or ``None`` when it can."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    try:
        from transformers.utils import is_bitsandbytes_available

        if not is_bitsandbytes_available():
            return "transformers reports bitsandbytes unavailable"
    except Exception as exc:  # noqa: BLE001 - probing must name the cause, not crash
        return f"probing failed: {exc}"
    return None


def load_tokenizer(model_path: str) -> Any:
    """The model's tokenizer (fast), with a pad token.

    Raises:
        ConfigError: it cannot be loaded (hub id offline, missing tokenizer files).
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, use_fast=True)
    except Exception as exc:  # noqa: BLE001 - every loader failure is a config problem here
        raise ConfigError(f"model_name_or_path: cannot load a tokenizer from {model_path}: {exc}") from None
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model_path: str, *, peft: dict[str, Any] | None, use_gpu: bool, init_adapter: str | None = None
) -> Any:
    """The base model (quantized for QLoRA), wrapped in a LoRA adapter when ``peft`` is set.

    With ``init_adapter`` the saved adapter is loaded (trainable) instead of a fresh one; without
    ``peft`` (full fine-tuning) the model itself is loaded from that folder.
    """
    if init_adapter is not None and peft is None:
        model_path = init_adapter
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    quantized = bool(peft and (peft.get("load_in_4bit") or peft.get("load_in_8bit")))
    bf16 = use_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    kwargs["dtype"] = torch.bfloat16 if bf16 else torch.float32
    if quantized:
        from transformers import BitsAndBytesConfig

        assert peft is not None
        if peft.get("load_in_4bit"):
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=kwargs["dtype"],
            )
        else:
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"model_name_or_path: cannot load a causal LM from {model_path}: {exc}") from None
    if peft is None:
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if init_adapter is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    targets = peft["target_modules"]
    lora = LoraConfig(
        r=peft["rank"],
        lora_alpha=peft["alpha"],
        lora_dropout=peft["dropout"],
        target_modules="all-linear" if targets == ["all-linear"] else sorted(targets),
        use_rslora=peft["use_rslora"],
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"peft.target_modules: {exc}") from None


def bf16_ok() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


__all__ = ["bf16_ok", "bitsandbytes_unsupported_reason", "load_model", "load_tokenizer", "resolve_model_path"]
