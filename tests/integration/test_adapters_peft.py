"""Merged adapters are real PEFT adapters: they load on the tiny base, generate, match PEFT's own
``add_weighted_adapter``, and survive a push/pull round trip through the hub client."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters_support.fake_hub import FakeHub  # noqa: E402
from adapters_support.lora import make_adapter  # noqa: E402

from provenir.adapters.hub import HubClient, HubConfig  # noqa: E402
from provenir.adapters.merging import MergeConfig, ModelMerger  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def pair(tiny_model_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("peft-pair")
    return make_adapter(tiny_model_dir, root / "a", seed=21), make_adapter(tiny_model_dir, root / "b", seed=22)


def _load(base: Path, adapter: Path, name: str = "default"):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    return PeftModel.from_pretrained(model, str(adapter), adapter_name=name).eval()


def test_merged_adapter_loads_generates_and_changes_the_model(tiny_model_dir, pair, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = ModelMerger().merge(list(pair), MergeConfig(strategy="ties", density=0.6), tmp_path / "merged")
    model = _load(tiny_model_dir, result.output_path)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    inputs = tokenizer("2 + 2 =", return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        merged_logits = model(**inputs).logits
    assert generated.shape == (1, inputs["input_ids"].shape[1] + 6)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    with torch.no_grad():
        base_logits = base(**inputs).logits
    assert not torch.allclose(merged_logits, base_logits, atol=1e-4)
    # the loaded layer's update is exactly the file's B @ A (PEFT read rank and alpha as written)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    from safetensors.torch import load_file

    tensors = load_file(str(result.output_path / "adapter_model.safetensors"))
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    expected = tensors[f"{key}.lora_B.weight"] @ tensors[f"{key}.lora_A.weight"]
    torch.testing.assert_close(layer.get_delta_weight("default"), expected, rtol=1e-5, atol=1e-6)


def test_ties_matches_peft_add_weighted_adapter_ties_svd(tiny_model_dir, pair, tmp_path):
    """Our file-based TIES equals PEFT's in-model ``add_weighted_adapter(combination_type="ties_svd")``."""
    import torch

    weights, density = [0.8, 1.2], 0.4
    result = ModelMerger().merge(
        list(pair), MergeConfig(strategy="ties", density=density, weights=weights, rank=64), tmp_path / "ours"
    )
    model = _load(tiny_model_dir, pair[0], "a")
    model.load_adapter(str(pair[1]), adapter_name="b")
    model.add_weighted_adapter(
        ["a", "b"], weights, "peft_ties", combination_type="ties_svd", svd_rank=64, density=density
    )
    ours = _load(tiny_model_dir, result.output_path)
    for index in range(2):
        for proj in ("q_proj", "v_proj"):
            theirs_layer = getattr(model.base_model.model.model.layers[index].self_attn, proj)
            our_layer = getattr(ours.base_model.model.model.layers[index].self_attn, proj)
            torch.testing.assert_close(
                our_layer.get_delta_weight("default"), theirs_layer.get_delta_weight("peft_ties"), rtol=1e-4, atol=1e-5
            )


def test_push_pull_round_trip_gives_the_same_model(tiny_model_dir, pair, tmp_path, monkeypatch):
    import huggingface_hub.constants as constants
    import torch

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    merged = ModelMerger().merge(list(pair), MergeConfig(strategy="slerp", t=0.5), tmp_path / "merged")
    with FakeHub(tokens={"hf_roundtrip"}) as hub:
        hub_client = HubClient(endpoint=hub.endpoint, token="hf_roundtrip")
        pushed = hub_client.push_adapter(merged.output_path, HubConfig(repo_id="team/merged-slerp"))
        assert "merge_manifest.json" in pushed.pushed_files
        card = hub.files("team/merged-slerp")["README.md"].decode()
        assert "### Merge (slerp)" in card and "merge-slerp" in card
        pulled = hub_client.pull_model("team/merged-slerp", tmp_path / "pulled")
    ids = torch.tensor([[1, 5, 9, 14]])
    with torch.no_grad():
        before = _load(tiny_model_dir, merged.output_path)(input_ids=ids).logits
        after = _load(tiny_model_dir, pulled)(input_ids=ids).logits
    assert torch.equal(before, after)


def test_output_model_folds_the_merge_into_the_base(tiny_model_dir, pair, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from provenir.adapters.merging import verify_merge
    from provenir.core.errors import ConfigError

    config = MergeConfig(strategy="ties", density=0.5, output="model")
    result = ModelMerger().merge(list(pair), config, tmp_path / "model")
    folder = result.output_path
    assert (folder / "config.json").is_file() and (folder / "adapter" / "adapter_model.safetensors").is_file()
    assert {"model.safetensors", "adapter/adapter_model.safetensors", "config.json"} <= set(result.files_sha256)
    assert verify_merge(folder) == []
    folded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    ids = tokenizer("12 + 30 =", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = _load(tiny_model_dir, folder / "adapter")(input_ids=ids).logits
        torch.testing.assert_close(folded(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)

    missing = MergeConfig(strategy="ties", output="model", base_model=str(tmp_path / "no-such-base"))
    with pytest.raises(ConfigError, match="cannot be loaded"):
        ModelMerger().merge(list(pair), missing, tmp_path / "model2")
    assert not (tmp_path / "model2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model2")]
