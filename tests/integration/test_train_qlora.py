"""QLoRA through bitsandbytes: the base model is loaded quantized and the LoRA adapter trains."""

from __future__ import annotations

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


def test_qlora_8bit_trains_an_adapter(tiny_model_dir, store_root):
    records = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in range(0, 9999, 611)]
    config = RunConfig(
        name="qlora", backend="trl", model_name_or_path=str(tiny_model_dir), max_steps=2, batch_size=4,
        peft=PEFTConfig(rank=4, alpha=8, load_in_8bit=True), data=DataConfig(template="chatml"),
    )
    result = TRLBackend().train_sft(config, JsonlDataset.from_records(records), store=ArtifactStore(store_root))
    assert result.metrics["steps"] == 2
    assert "adapter/adapter_model.safetensors" in result.manifest.artifacts
