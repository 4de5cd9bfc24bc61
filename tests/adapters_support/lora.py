"""Seeded, randomly initialised PEFT LoRA adapters on the tiny model (no training needed)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_TARGETS = ("q_proj", "v_proj")


def make_adapter(
    base_dir: Path,
    out_dir: Path,
    *,
    seed: int,
    r: int = 4,
    alpha: int = 8,
    target_modules: tuple[str, ...] = DEFAULT_TARGETS,
    use_rslora: bool = False,
    **extra,
) -> Path:
    """Save a LoRA adapter whose A and B are both random (``init_lora_weights=False``), seeded."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    torch.manual_seed(seed)
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        lora_dropout=0.0,
        init_lora_weights=False,
        use_rslora=use_rslora,
        task_type="CAUSAL_LM",
        **extra,
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # B is small by default; make updates large enough to matter
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    peft_model.save_pretrained(str(out_dir))
    return Path(out_dir)


def load_factors(adapter_dir: Path) -> dict[str, object]:
    from safetensors.torch import load_file

    return load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
