"""ModelMerger on seeded random LoRA adapters of the tiny model, checked against independent maths.

SLERP is compared with mergekit's own ``slerp`` on the dense updates; TIES with a NumPy
implementation written here from the paper's three steps; DARE by checking that every entry of the
result is one of the values a drop-and-rescale realisation can produce and that the kept fraction
matches ``density``. Validation, atomic output and the provenance manifest are tested too.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from adapters_support.lora import load_factors, make_adapter  # noqa: E402

from provenir.adapters.merging import MERGE_MANIFEST_NAME, MergeConfig, ModelMerger, verify_merge  # noqa: E402
from provenir.core.errors import ConfigError  # noqa: E402
from provenir.core.hashing import sha256_file  # noqa: E402

pytestmark = pytest.mark.timeout(300)

PREFIX = "base_model.model."


@pytest.fixture(scope="module")
def adapters(tiny_model_dir: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "a": make_adapter(tiny_model_dir, root / "a", seed=1),
        "b": make_adapter(tiny_model_dir, root / "b", seed=2),
        "c": make_adapter(tiny_model_dir, root / "c", seed=3),
        "r8": make_adapter(tiny_model_dir, root / "r8", seed=4, r=8, alpha=16),
        "rslora": make_adapter(tiny_model_dir, root / "rslora", seed=5, use_rslora=True),
        "mlp": make_adapter(tiny_model_dir, root / "mlp", seed=6, target_modules=("up_proj",)),
        "emb_a": make_adapter(tiny_model_dir, root / "emb_a", seed=7, target_modules=("embed_tokens", "q_proj")),
        "emb_b": make_adapter(tiny_model_dir, root / "emb_b", seed=8, target_modules=("embed_tokens", "q_proj")),
    }


def deltas(adapter_dir: Path) -> dict[str, np.ndarray]:
    """ΔW = scaling · B @ A per module, in float64, computed from the files (independently of Provenir)."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = {k: v.double().numpy() for k, v in load_factors(adapter_dir).items()}
    out = {}
    for key, a in tensors.items():
        for a_suffix, b_suffix in ((".lora_A.weight", ".lora_B.weight"), (".lora_embedding_A", ".lora_embedding_B")):
            if key.endswith(a_suffix):
                module = key[: -len(a_suffix)]
                b = tensors[module + b_suffix]
                r = a.shape[0]
                alpha = config["lora_alpha"]
                scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
                out[module] = scaling * (b @ a)
    return out


def numpy_ties(updates: list[np.ndarray], weights: list[float], density: float) -> np.ndarray:
    """TIES from the paper: trim to top-k magnitude, elect sign by total mass, disjoint mean."""
    trimmed = []
    for update in updates:
        k = int(density * update.size)
        flat = np.abs(update).ravel()
        keep = np.zeros(update.size, dtype=bool)
        keep[np.argsort(-flat, kind="stable")[:k]] = True
        trimmed.append(np.where(keep.reshape(update.shape), update, 0.0))
    stacked = np.stack(trimmed)
    elected = np.where(stacked.sum(axis=0) >= 0, 1.0, -1.0)
    agree = np.sign(stacked) == elected
    weighted = stacked * np.asarray(weights)[:, None, None]
    total = (weighted * agree).sum(axis=0)
    return total / np.maximum(agree.sum(axis=0), 1)


def numpy_slerp_rows(t: float, v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    """Row-wise SLERP written from the textbook formula (collinear rows: linear)."""
    out = np.empty_like(v0)
    for i in range(v0.shape[0]):
        n0, n1 = np.linalg.norm(v0[i]), np.linalg.norm(v1[i])
        dot = float(np.clip(v0[i] @ v1[i] / (n0 * n1), -1, 1))
        if abs(dot) > 0.9995:
            out[i] = (1 - t) * v0[i] + t * v1[i]
            continue
        theta = math.acos(dot)
        out[i] = (math.sin((1 - t) * theta) * v0[i] + math.sin(t * theta) * v1[i]) / math.sin(theta)
    return out


# --- SLERP -----------------------------------------------------------------------------------


def test_slerp_equals_mergekit_and_textbook_slerp_of_the_updates(adapters, tmp_path):
    import torch
    from mergekit.merge_methods.slerp import slerp as mergekit_slerp

    result = ModelMerger().merge([adapters["a"], adapters["b"]], MergeConfig(strategy="slerp", t=0.3), tmp_path / "m")
    assert result.rank == 8 and result.svd_relative_error_max == 0.0
    merged, da, db = deltas(result.output_path), deltas(adapters["a"]), deltas(adapters["b"])
    assert set(merged) == set(da) and len(merged) == 4
    for module in merged:
        reference = mergekit_slerp(torch.tensor(0.3), torch.from_numpy(da[module]), torch.from_numpy(db[module]))
        np.testing.assert_allclose(merged[module], reference.numpy(), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(merged[module], numpy_slerp_rows(0.3, da[module], db[module]), rtol=1e-4, atol=1e-6)
        # not the trivial answers
        assert not np.allclose(merged[module], 0.7 * da[module] + 0.3 * db[module], atol=1e-4)


@pytest.mark.parametrize(("t", "which"), [(0.0, "a"), (1.0, "b")])
def test_slerp_endpoints_reproduce_the_inputs(adapters, tmp_path, t, which):
    result = ModelMerger().merge([adapters["a"], adapters["b"]], MergeConfig(t=t), tmp_path / "m")
    merged, expected = deltas(result.output_path), deltas(adapters[which])
    for module in merged:
        np.testing.assert_allclose(merged[module], expected[module], rtol=1e-5, atol=1e-6)


def test_slerp_respects_rslora_scaling_and_mixed_ranks(adapters, tmp_path):
    result = ModelMerger().merge([adapters["rslora"], adapters["r8"]], MergeConfig(t=0.0), tmp_path / "m")
    assert result.rank == 12  # 4 + 8, exact
    merged, expected = deltas(result.output_path), deltas(adapters["rslora"])
    for module in merged:
        np.testing.assert_allclose(merged[module], expected[module], rtol=1e-5, atol=1e-6)


def test_slerp_on_embedding_interpolates_rows_of_the_embedding_matrix(adapters, tmp_path):
    import torch
    from mergekit.merge_methods.slerp import slerp as mergekit_slerp

    result = ModelMerger().merge([adapters["emb_a"], adapters["emb_b"]], MergeConfig(t=0.6), tmp_path / "m")
    merged, da, db = deltas(result.output_path), deltas(adapters["emb_a"]), deltas(adapters["emb_b"])
    embed = [m for m in merged if m.endswith("embed_tokens")]
    assert len(embed) == 1
    module = embed[0]
    # PEFT's embedding weight is (B @ A)ᵀ: vocab rows
    reference = mergekit_slerp(torch.tensor(0.6), torch.from_numpy(da[module].T), torch.from_numpy(db[module].T))
    np.testing.assert_allclose(merged[module].T, reference.numpy(), rtol=1e-4, atol=1e-6)


def test_scale_multiplies_the_merged_update(adapters, tmp_path):
    one = ModelMerger().merge([adapters["a"], adapters["b"]], MergeConfig(t=0.4), tmp_path / "one")
    half = ModelMerger().merge([adapters["a"], adapters["b"]], MergeConfig(t=0.4, scale=0.5), tmp_path / "half")
    d1, d2 = deltas(one.output_path), deltas(half.output_path)
    for module in d1:
        np.testing.assert_allclose(d2[module], 0.5 * d1[module], rtol=1e-6, atol=1e-8)


# --- TIES ------------------------------------------------------------------------------------


def test_ties_at_full_rank_equals_numpy_ties(adapters, tmp_path):
    names = ["a", "b", "c"]
    weights, density, scale = [0.7, 1.3, 1.0], 0.3, 0.8
    config = MergeConfig(strategy="ties", density=density, weights=weights, scale=scale, rank=64)
    result = ModelMerger().merge([adapters[n] for n in names], config, tmp_path / "m")
    merged = deltas(result.output_path)
    inputs = [deltas(adapters[n]) for n in names]
    assert result.svd_relative_error_max < 1e-5
    for module in merged:
        expected = scale * numpy_ties([d[module] for d in inputs], weights, density)
        np.testing.assert_allclose(merged[module], expected, rtol=1e-4, atol=1e-5)
        # about density of each input survived, so most entries are non-zero but some cancel out
        assert 0.3 < np.mean(np.abs(expected) > 0) < 0.8


def test_ties_default_rank_is_the_best_low_rank_approximation(adapters, tmp_path):
    config = MergeConfig(strategy="ties", density=0.5)
    result = ModelMerger().merge([adapters["a"], adapters["b"]], config, tmp_path / "m")
    assert result.rank == 8
    merged = deltas(result.output_path)
    da, db = deltas(adapters["a"]), deltas(adapters["b"])
    worst = 0.0
    for module in merged:
        full = numpy_ties([da[module], db[module]], [1.0, 1.0], 0.5)
        u, s, vh = np.linalg.svd(full)
        best = (u[:, :8] * s[:8]) @ vh[:8]
        np.testing.assert_allclose(merged[module], best, rtol=1e-3, atol=1e-5)
        worst = max(worst, float(np.linalg.norm(s[8:]) / np.linalg.norm(s)))
    manifest = json.loads((result.output_path / MERGE_MANIFEST_NAME).read_text())
    assert manifest["svd_relative_error"]["max"] == pytest.approx(worst, rel=1e-3)
    assert manifest["svd_relative_error"]["modules_factorised"] == 4


def test_ties_merges_adapters_of_different_ranks(adapters, tmp_path):
    result = ModelMerger().merge(
        [adapters["a"], adapters["r8"]], MergeConfig(strategy="ties", density=0.5, rank=64), tmp_path / "m"
    )
    merged, da, db = deltas(result.output_path), deltas(adapters["a"]), deltas(adapters["r8"])
    for module in merged:
        np.testing.assert_allclose(merged[module], numpy_ties([da[module], db[module]], [1, 1], 0.5), rtol=1e-4, atol=1e-5)


# --- DARE ------------------------------------------------------------------------------------


def test_dare_linear_is_a_drop_and_rescale_realisation(adapters, tmp_path):
    weights, density = [0.6, 1.5], 0.4
    config = MergeConfig(strategy="dare", dare_variant="linear", density=density, weights=weights, rank=64, seed=11)
    result = ModelMerger().merge([adapters["a"], adapters["b"]], config, tmp_path / "m")
    merged, da, db = deltas(result.output_path), deltas(adapters["a"]), deltas(adapters["b"])
    kept_a = kept_b = total = 0
    for module in merged:
        x = weights[0] * da[module] / density
        y = weights[1] * db[module] / density
        candidates = np.stack([np.zeros_like(x), x, y, x + y])  # masks (0,0) (1,0) (0,1) (1,1)
        distance = np.abs(candidates - merged[module][None])
        choice = distance.argmin(axis=0)
        scale = np.maximum(np.abs(x), np.abs(y)) + 1e-12
        assert np.all(distance.min(axis=0) / scale < 1e-3), "an entry is not a DARE outcome"
        kept_a += int(np.isin(choice, (1, 3)).sum())
        kept_b += int(np.isin(choice, (2, 3)).sum())
        total += choice.size
    # 16384 Bernoulli(0.4) draws per adapter: the kept fraction is 0.4 ± 0.012 at 3 sigma
    assert abs(kept_a / total - density) < 0.02
    assert abs(kept_b / total - density) < 0.02


def test_dare_is_reproducible_and_the_seed_matters(adapters, tmp_path):
    paths = [adapters["a"], adapters["b"]]
    first = ModelMerger().merge(paths, MergeConfig(strategy="dare", seed=5), tmp_path / "one")
    second = ModelMerger().merge(paths, MergeConfig(strategy="dare", seed=5), tmp_path / "two")
    other = ModelMerger().merge(paths, MergeConfig(strategy="dare", seed=6), tmp_path / "three")
    assert first.files_sha256 == second.files_sha256
    assert first.merge_id == second.merge_id
    assert first.files_sha256["adapter_model.safetensors"] != other.files_sha256["adapter_model.safetensors"]
    assert first.merge_id != other.merge_id


def test_dare_ties_at_density_one_is_ties_without_trimming(adapters, tmp_path):
    paths = [adapters["a"], adapters["b"], adapters["c"]]
    dare = ModelMerger().merge(paths, MergeConfig(strategy="dare", density=1.0, rank=64), tmp_path / "dare")
    merged = deltas(dare.output_path)
    inputs = [deltas(adapters[n]) for n in "abc"]
    for module in merged:
        np.testing.assert_allclose(
            merged[module], numpy_ties([d[module] for d in inputs], [1, 1, 1], 1.0), rtol=1e-4, atol=1e-5
        )


def test_slerp_and_ties_outputs_are_byte_identical_across_runs(adapters, tmp_path):
    paths = [adapters["a"], adapters["b"]]
    for strategy in ("slerp", "ties"):
        one = ModelMerger().merge(paths, MergeConfig(strategy=strategy), tmp_path / f"{strategy}1")
        two = ModelMerger().merge(paths, MergeConfig(strategy=strategy), tmp_path / f"{strategy}2")
        assert one.files_sha256 == two.files_sha256
        manifest_one = json.loads((one.output_path / MERGE_MANIFEST_NAME).read_text())
        manifest_two = json.loads((two.output_path / MERGE_MANIFEST_NAME).read_text())
        assert manifest_one == manifest_two


# --- provenance ------------------------------------------------------------------------------


def test_manifest_traces_the_merge_back_to_its_parents(adapters, tmp_path):
    parent = tmp_path / "runs" / "run-parent"
    import shutil

    shutil.copytree(adapters["a"], parent / "adapter")
    (parent / "manifest.json").write_text(
        json.dumps({"run_id": "run-parent", "dataset_hash": "d" * 64, "config_hash": "c" * 64, "seed": 3})
    )
    result = ModelMerger().merge(
        [parent / "adapter", adapters["b"]], MergeConfig(strategy="ties", density=0.7), tmp_path / "m"
    )
    manifest = json.loads((result.output_path / MERGE_MANIFEST_NAME).read_text())
    assert manifest["strategy"] == "ties"
    assert manifest["parameters"]["density"] == 0.7 and manifest["parameters"]["weights"] == [1.0, 1.0]
    first, second = manifest["inputs"]
    assert first["files"]["adapter_model.safetensors"] == sha256_file(adapters["a"] / "adapter_model.safetensors")
    assert second["files"]["adapter_model.safetensors"] == sha256_file(adapters["b"] / "adapter_model.safetensors")
    assert first["provenance"]["run_id"] == "run-parent"
    assert first["provenance"]["dataset_hash"] == "d" * 64
    assert second["provenance"] == {}
    out_files = manifest["output"]["files"]
    assert out_files["adapter_model.safetensors"] == sha256_file(result.output_path / "adapter_model.safetensors")
    assert out_files == result.files_sha256
    assert sorted(p.name for p in result.output_path.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        MERGE_MANIFEST_NAME,
    ]
    config = json.loads((result.output_path / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 8 and config["peft_type"] == "LORA"
    assert verify_merge(result.output_path) == []
    # tamper with the output: verification names the file
    weights = result.output_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert verify_merge(result.output_path) == ["adapter_model.safetensors: sha256 differs from the manifest"]


# --- validation ------------------------------------------------------------------------------


def test_slerp_takes_exactly_two(adapters, tmp_path):
    with pytest.raises(ConfigError, match="slerp merges exactly two adapters, got 3"):
        ModelMerger().merge([adapters["a"], adapters["b"], adapters["c"]], MergeConfig(), tmp_path / "m")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_density_must_be_in_zero_one(density):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="density must be in"):
        MergeConfig(strategy="ties", density=density)


def test_a_dict_config_is_validated_with_a_clear_error(adapters, tmp_path):
    with pytest.raises(ConfigError, match="merge config: density: .*density must be in"):
        ModelMerger().merge([adapters["a"], adapters["b"]], {"strategy": "ties", "density": 2}, tmp_path / "m")
    with pytest.raises(ConfigError, match="merge config: strategy"):
        ModelMerger().merge([adapters["a"], adapters["b"]], {"strategy": "avg"}, tmp_path / "m")


def test_inputs_are_checked_before_any_work(adapters, tmp_path):
    merger, ties = ModelMerger(), MergeConfig(strategy="ties")
    with pytest.raises(ConfigError, match="adapter folder not found"):
        merger.merge([adapters["a"], tmp_path / "nope"], ties, tmp_path / "m")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="no adapter_config.json; this is not a PEFT adapter"):
        merger.merge([adapters["a"], tmp_path / "plain"], ties, tmp_path / "m")
    with pytest.raises(ConfigError, match="adapters target different modules .*only in"):
        merger.merge([adapters["a"], adapters["mlp"]], ties, tmp_path / "m")
    with pytest.raises(ConfigError, match="weights has 3 values for 2 adapters"):
        merger.merge([adapters["a"], adapters["b"]], MergeConfig(strategy="ties", weights=[1, 1, 1]), tmp_path / "m")
    with pytest.raises(ConfigError, match="listed twice"):
        merger.merge([adapters["a"], adapters["a"]], ties, tmp_path / "m")
    with pytest.raises(ConfigError, match="at least two adapters"):
        merger.merge([adapters["a"]], ties, tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_different_base_models_are_refused_unless_allowed(adapters, tmp_path):
    import shutil

    other = tmp_path / "other-base"
    shutil.copytree(adapters["b"], other)
    config = json.loads((other / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "someone/another-model"
    (other / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="different base models.*someone/another-model"):
        ModelMerger().merge([adapters["a"], other], MergeConfig(), tmp_path / "m")
    result = ModelMerger().merge([adapters["a"], other], MergeConfig(check_base_model=False), tmp_path / "m")
    assert (result.output_path / "adapter_model.safetensors").is_file()


def test_pickle_only_dora_and_non_lora_adapters_are_refused(adapters, tmp_path):
    import shutil

    pickled = tmp_path / "pickled"
    shutil.copytree(adapters["b"], pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(ConfigError, match=r"only adapter_model.bin \(pickle\)"):
        ModelMerger().merge([adapters["a"], pickled], MergeConfig(), tmp_path / "m")
    for field, value, message in (
        ("use_dora", True, "DoRA"),
        ("peft_type", "IA3", "only LoRA adapters can be merged"),
    ):
        bad = tmp_path / f"bad-{field}"
        shutil.copytree(adapters["b"], bad)
        config = json.loads((bad / "adapter_config.json").read_text())
        config[field] = value
        (bad / "adapter_config.json").write_text(json.dumps(config))
        with pytest.raises(ConfigError, match=message):
            ModelMerger().merge([adapters["a"], bad], MergeConfig(), tmp_path / "m")


def test_output_is_atomic_and_never_overwritten_silently(adapters, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(ConfigError, match="is not empty"):
        ModelMerger().merge([adapters["a"], adapters["b"]], MergeConfig(), out)
    assert (out / "keep.txt").read_text() == "precious"

    import safetensors.torch

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        ModelMerger().merge([adapters["a"], adapters["b"]], MergeConfig(), out, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp folder left
    assert (out / "keep.txt").read_text() == "precious"
    monkeypatch.undo()

    result = ModelMerger().merge([adapters["a"], adapters["b"]], MergeConfig(), out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert result.output_path == out
