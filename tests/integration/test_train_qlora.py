"""QLoRA through bitsandbytes: the base model is loaded quantized and the LoRA adapter trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenir.core.config import DataConfig, PEFTConfig, RunConfig
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.train.backends.trl import TRLBackend, bitsandbytes_unsupported_reason, load_model

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(bitsandbytes_unsupported_reason() is not None, reason="no bitsandbytes support"),
]


@pytest.mark.parametrize(("flag", "layer"), [("load_in_4bit", "Linear4bit"), ("load_in_8bit", "Linear8bitLt")])
def test_quantized_base_with_lora(tiny_model_dir, flag, layer):
    peft = PEFTConfig(rank=4, alpha=8, **{flag: True}).model_dump()
    model = load_model(str(tiny_model_dir), peft=peft, use_gpu=False)
    names = {type(m).__name__ for m in model.modules()}
    assert layer in names
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)


def _train(tiny_model_dir, root, flag: str, seed: int = 42):
    records = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in range(0, 9999, 611)]
    config = RunConfig(
        name=f"qlora-{flag}", backend="trl", model_name_or_path=str(tiny_model_dir), max_steps=2, batch_size=4,
        seed=seed, peft=PEFTConfig(rank=4, alpha=8, **{flag: True}), data=DataConfig(template="chatml"),
    )
    return TRLBackend().train_sft(config, JsonlDataset.from_records(records), store=ArtifactStore(root))


@pytest.mark.parametrize("flag", ["load_in_4bit", "load_in_8bit"])
def test_quantized_training_updates_the_adapter_reproducibly(tiny_model_dir, tmp_path, flag):
    """QLoRA (4-bit NF4, double quant) and 8-bit train on CPU: the adapter moves off its
    initialisation, and the same seed gives the same adapter bytes."""
    from safetensors.torch import load_file

    first = _train(tiny_model_dir, tmp_path / "a", flag)
    assert first.metrics["steps"] == 2
    assert "adapter/adapter_model.safetensors" in first.manifest.artifacts
    weights = load_file(str(Path(first.adapter_path) / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(float(t.abs().max()) > 0 for t in lora_b)  # B starts at zero: it trained
    again = _train(tiny_model_dir, tmp_path / "b", flag)
    sha = first.manifest.artifacts["adapter/adapter_model.safetensors"]
    assert again.manifest.artifacts["adapter/adapter_model.safetensors"] == sha
    other = _train(tiny_model_dir, tmp_path / "c", flag, seed=7)
    assert other.manifest.artifacts["adapter/adapter_model.safetensors"] != sha
