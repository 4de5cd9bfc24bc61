"""SFT with packing on the tiny model: packed neighbours never attend to each other (the packed
batch's loss is the unpacked loss of the same records), packed runs are bit-identical, the
manifest says packing was on."""

from __future__ import annotations

from pathlib import Path

import pytest

from provenir.core.config import DataConfig, PEFTConfig, RunConfig, TrainingConfig
from provenir.core.store import ArtifactStore
from provenir.data.dataset import JsonlDataset
from provenir.train.backends import get_backend

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

RECORDS = [{"instruction": f"Copy {i:04d}", "output": f"{i:04d}"} for i in range(0, 9999, 311)]


def _config(model: Path, seed: int = 1, packing: bool = True, **kw) -> RunConfig:
    return RunConfig(
        name="tiny-packed", backend="trl", seed=seed, model_name_or_path=str(model), max_steps=4, batch_size=2,
        data=DataConfig(template="chatml"),
        peft=PEFTConfig(rank=4, alpha=8, dropout=0.1, target_modules=["all-linear"]),
        training=TrainingConfig(learning_rate=5e-3, logging_steps=2, max_seq_length=96, packing=packing, **kw),
    )


def _token_loss_sum(model, input_ids, labels, **kwargs):
    """Summed next-token cross-entropy over the labelled positions, and how many there are."""
    import torch

    logits = model(input_ids=input_ids, **kwargs).logits.float()
    shift_logits, shift_labels = logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1)
    loss = torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")
    return float(loss), int((shift_labels != -100).sum())


def test_a_packed_batch_has_the_unpacked_loss_of_its_records(tiny_model_dir, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from provenir.train.backends._trl import sft
    from provenir.train.backends._trl.loop import training_arguments
    from provenir.train.backends.trl import build_loop_config, prepare

    data = JsonlDataset.from_records(RECORDS)
    config = _config(tiny_model_dir)
    prepared = prepare("sft", config, data, None)
    unpacked_rows = prepare("sft", _config(tiny_model_dir, packing=False), data, None)["train"]
    assert sum(len(row["seq_lengths"]) for row in prepared["train"]) == len(unpacked_rows)
    assert len(prepared["train"]) < len(unpacked_rows) / 3
    loop = build_loop_config("sft", config, prepared, output_dir=str(tmp_path / "hf"),
                             adapter_dir=str(tmp_path / "adapter"), metrics_path=str(tmp_path / "m.json"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = sft.build_trainer(loop, model, tokenizer, training_arguments(loop, {}),
                                Dataset.from_list(prepared["train"]), None)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].size(0) == config.batch_size

    # the records in the batch, cut where the position ids restart at 0 (padding: one token each)
    originals = {tuple(row["input_ids"]): row["labels"] for row in unpacked_rows}
    segments = []
    for ids_row, labels_row, positions in zip(batch["input_ids"], batch["labels"], batch["position_ids"]):
        starts = [*(positions == 0).nonzero().flatten().tolist(), positions.numel()]
        for a, b in zip(starts, starts[1:]):
            if (ids_row[a:b] == tokenizer.pad_token_id).all():
                continue
            assert positions[a:b].tolist() == list(range(b - a))
            segments.append((ids_row[a:b], labels_row[a:b]))
    assert len(segments) >= 4  # several short records share each packed row
    for ids, labels in segments:
        key = tuple(ids.tolist())
        assert key in originals  # whole records, none cut
        assert labels[0] == -100 and labels[1:].tolist() == originals[key][1:]

    with torch.no_grad():
        packed_loss = float(model(**batch).loss)
        total, count = 0.0, 0
        for ids, labels in segments:  # each record on its own: no neighbour to attend to
            part, n = _token_loss_sum(model, ids[None], labels[None])
            total, count = total + part, count + n
        # the same rows with positions running on and no boundary: neighbours attend to each other
        running = torch.arange(batch["input_ids"].size(1)).expand_as(batch["input_ids"])
        leaky, leaky_count = _token_loss_sum(model, batch["input_ids"], batch["labels"], position_ids=running)
    unpacked_loss = total / count
    assert leaky_count == count  # the same labelled tokens in both
    assert packed_loss == pytest.approx(unpacked_loss, rel=1e-5, abs=1e-6)
    assert abs(leaky / count - unpacked_loss) > 1e-3  # so the comparison above can fail


def test_packed_runs_are_bit_identical_and_the_manifest_says_packing(tiny_model_dir, store_root):
    from provenir.core.run import verify_run

    backend = get_backend("trl")
    store = ArtifactStore(store_root)
    data = JsonlDataset.from_records(RECORDS)
    first = backend.train_sft(_config(tiny_model_dir), data, store=store)
    second = backend.train_sft(_config(tiny_model_dir), data, store=store)
    unpacked = backend.train_sft(_config(tiny_model_dir, packing=False), data, store=store)

    weights = "adapter/adapter_model.safetensors"
    assert first.manifest.artifacts[weights] == second.manifest.artifacts[weights]
    assert first.manifest.artifacts[weights] != unpacked.manifest.artifacts[weights]
    assert first.manifest.config["training"]["packing"] is True
    assert unpacked.manifest.config["training"]["packing"] is False
    assert first.manifest.config_hash != unpacked.manifest.config_hash
    # 33 records of ~20 tokens in rows of 96: a few packed rows, each step trains many records
    assert 0 < first.metrics["packed_rows"] < len(RECORDS) / 3 and "packed_rows" not in unpacked.metrics
    assert first.metrics["steps"] == 4 and first.metrics["train_tokens"] > 2 * unpacked.metrics["train_tokens"]
    assert verify_run(store, first.manifest.run_id).ok
