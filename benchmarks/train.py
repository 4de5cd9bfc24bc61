"""Training throughput: Provenir's ``trl`` backend against a plain TRL script, and Ray DDP scaling.

Workloads (all on the same model, data and trainer settings, measured in this one run):

* ``plain-trl``: a hand-written ``SFTTrainer`` script (prompt/completion dataset, LoRA) — the baseline;
* ``provenir-trl``: ``get_backend("trl").train_sft`` with the same settings (run recording,
  hashing, template formatting and determinism included);
* ``ray-ddp-1`` / ``ray-ddp-2``: the backend on a Ray Train worker group of 1 and 2 CPU workers;
* ``packing-off`` / ``packing-on``: the backend without and with ``training.packing`` (BFD packing
  into ``max_seq_length`` rows, per-example position ids), the same batch size and steps, on two
  sets of short records: ``uniform`` (all ``Copy NNNN``, ~22 tokens: nothing to pad) and
  ``long-tail`` (one record in eight ~94 tokens, the rest ~22, as instruction data tends to be: an
  unpacked batch pads to its longest): real (non-padding) tokens per second, target >= 2x;
* ``grpo-plain-trl`` / ``grpo-provenir``: a hand-written ``GRPOTrainer`` script against
  ``train_grpo`` on the same model, prompts, LoRA, group size and completion length: optimizer
  steps per second, target >= 0.95x.

Tokens/s is non-padding tokens seen by the trainer divided by the trainer's own ``train_runtime``
(model loading and process start-up excluded: the platform's per-step cost is what is compared).

``--model-size 1b --device cuda`` trains a ~1.1B-parameter Llama-shaped model (random init, bf16,
LoRA on all linear layers) and also prints MFU = 4 · N · tokens/s ÷ peak bf16 FLOP/s (``--peak-tflops``,
default 989 for an H100 SXM).

    python benchmarks/train.py                      # tiny model on CPU, all four workloads
    python benchmarks/train.py --skip-ray --steps 30
    python benchmarks/train.py --only packing,grpo --skip-ray   # just the packing and GRPO rows
    python benchmarks/train.py --model-size 1b --device cuda --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def build_model(size: str, root: Path) -> Path:
    from provenir.train.tiny import build_tiny_model

    if size == "tiny":
        return build_tiny_model(root / "tiny-llama", seed=0)
    # ~1.1B parameters, TinyLlama-1.1B's shape, random init; tokenizer from the tiny factory
    return build_tiny_model(
        root / "llama-1b", seed=0, vocab_size=1024, hidden_size=2048, num_layers=22, num_heads=32,
        intermediate_size=5632, max_position_embeddings=2048,
    )


def long_tail_records(n: int) -> list[dict[str, str]]:
    import random

    rng = random.Random(1)
    out = []
    for i in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(40 if i % 8 == 7 else 4))
        out.append({"instruction": f"Copy {digits}", "output": digits})
    return out


def records(n: int, long: bool) -> list[dict[str, str]]:
    import random

    rng = random.Random(0)
    out = []
    for _ in range(n):
        digits = "".join(rng.choice("0123456789") for _ in range(400 if long else 4))
        out.append({"instruction": f"Copy {digits}", "output": digits})
    return out


def settings(args: argparse.Namespace) -> dict:
    return {
        "max_steps": args.steps, "batch_size": args.batch_size, "lr": 1e-3, "rank": 16,
        "max_len": 2048 if args.model_size == "1b" else 128,
    }


def plain_trl(model_dir: Path, data: list[dict], s: dict, use_gpu: bool, out: Path) -> dict:
    """The baseline: what a user would write by hand with TRL + PEFT."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from provenir.data.templates import TEMPLATE_REGISTRY

    chatml = TEMPLATE_REGISTRY.get("chatml")
    rows = []
    for record in data:
        prompt, completion = chatml.split(record)
        rows.append({"prompt": prompt, "completion": completion})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = torch.bfloat16 if use_gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    args = SFTConfig(
        output_dir=str(out), max_steps=s["max_steps"], per_device_train_batch_size=s["batch_size"],
        learning_rate=s["lr"], logging_steps=10, save_strategy="no", report_to="none", seed=0,
        use_cpu=not use_gpu, bf16=use_gpu, gradient_checkpointing=False, max_length=s["max_len"],
        include_num_input_tokens_seen="non_padding", disable_tqdm=True, dataloader_num_workers=0,
    )
    peft = LoraConfig(r=s["rank"], lora_alpha=2 * s["rank"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=tokenizer, peft_config=peft)
    output = trainer.train()
    runtime = output.metrics["train_runtime"]
    tokens = trainer.state.num_input_tokens_seen
    return {"tokens": tokens, "runtime": runtime, "tokens_per_second": tokens / runtime}


def provenir_trl(model_dir: Path, data: list[dict], s: dict, use_gpu: bool, store: Path,
                 workers: int | None = None) -> dict:
    from provenir.core.config import DataConfig, DistributedConfig, PEFTConfig, RunConfig, TrainingConfig
    from provenir.core.store import ArtifactStore
    from provenir.data.dataset import JsonlDataset
    from provenir.train.backends import get_backend

    config = RunConfig(
        name="bench", backend="trl", seed=0, model_name_or_path=str(model_dir), max_steps=s["max_steps"],
        batch_size=s["batch_size"],
        peft=PEFTConfig(rank=s["rank"], alpha=2 * s["rank"], dropout=0.0, target_modules=["all-linear"]),
        data=DataConfig(template="chatml"),
        training=TrainingConfig(learning_rate=s["lr"], num_epochs=1000, logging_steps=10,
                                lr_scheduler="linear", max_seq_length=s["max_len"]),
        distributed=DistributedConfig(strategy="ddp", num_gpus=workers, use_gpu=use_gpu) if workers else None,
    )
    result = get_backend("trl").train_sft(config, JsonlDataset.from_records(data), store=ArtifactStore(store))
    m = result.metrics
    return {"tokens": m["train_tokens"], "runtime": m["train_runtime_s"],
            "tokens_per_second": m["train_tokens"] / m["train_runtime_s"], "params": None}


def provenir_packing(model_dir: Path, data: list[dict], s: dict, use_gpu: bool, store: Path, packing: bool) -> dict:
    from provenir.core.config import DataConfig, PEFTConfig, RunConfig, TrainingConfig
    from provenir.core.store import ArtifactStore
    from provenir.data.dataset import JsonlDataset
    from provenir.train.backends import get_backend

    config = RunConfig(
        name="bench-packing", backend="trl", seed=0, model_name_or_path=str(model_dir), max_steps=s["max_steps"],
        batch_size=s["batch_size"],
        peft=PEFTConfig(rank=s["rank"], alpha=2 * s["rank"], dropout=0.0, target_modules=["all-linear"]),
        data=DataConfig(template="chatml"),
        training=TrainingConfig(learning_rate=s["lr"], num_epochs=1000, logging_steps=10,
                                max_seq_length=s["max_len"], packing=packing),
    )
    m = get_backend("trl").train_sft(config, JsonlDataset.from_records(data), store=ArtifactStore(store)).metrics
    return {"tokens": m["train_tokens"], "runtime": m["train_runtime_s"],
            "tokens_per_second": m["train_tokens"] / m["train_runtime_s"]}


GRPO = {"num_generations": 4, "max_completion_length": 8, "temperature": 1.0, "pattern": "^ "}


def grpo_prompts(n: int) -> list[dict[str, str]]:
    return [{"instruction": f"Say a number after {i:04d}", "output": f"{i + 1:04d}"} for i in range(n)]


def plain_grpo(model_dir: Path, data: list[dict], s: dict, use_gpu: bool, out: Path) -> dict:
    """The baseline: a GRPOTrainer script as a user would write it, with the same settings."""
    import re

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from provenir.data.templates import TEMPLATE_REGISTRY

    chatml = TEMPLATE_REGISTRY.get("chatml")
    rows = [{"prompt": chatml.split(r)[0], "output": r["output"]} for r in data]
    pattern = re.compile(GRPO["pattern"])

    def leading_space(completions, **kwargs):
        return [float(pattern.search(c) is not None) for c in completions]

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if use_gpu else torch.float32)
    args = GRPOConfig(
        output_dir=str(out), max_steps=s["grpo_steps"], per_device_train_batch_size=s["grpo_batch"],
        learning_rate=s["lr"], logging_steps=10, save_strategy="no", report_to="none", seed=0,
        use_cpu=not use_gpu, bf16=use_gpu, disable_tqdm=True, dataloader_num_workers=0, gradient_checkpointing=False,
        num_generations=GRPO["num_generations"], max_completion_length=GRPO["max_completion_length"],
        temperature=GRPO["temperature"],
    )
    peft = LoraConfig(r=s["rank"], lora_alpha=2 * s["rank"], lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=[leading_space], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft)
    output = trainer.train()
    runtime = output.metrics["train_runtime"]
    steps = trainer.state.global_step
    return {"steps": steps, "runtime": runtime, "steps_per_second": steps / runtime}


def provenir_grpo(model_dir: Path, data: list[dict], s: dict, use_gpu: bool, store: Path) -> dict:
    from provenir.core.config import DataConfig, PEFTConfig, RunConfig, TrainingConfig
    from provenir.core.store import ArtifactStore
    from provenir.data.dataset import JsonlDataset
    from provenir.train.backends import get_backend

    config = RunConfig(
        name="bench-grpo", backend="trl", seed=0, model_name_or_path=str(model_dir), max_steps=s["grpo_steps"],
        batch_size=s["grpo_batch"],
        peft=PEFTConfig(rank=s["rank"], alpha=2 * s["rank"], dropout=0.0, target_modules=["all-linear"]),
        data=DataConfig(template="chatml"),
        training=TrainingConfig(
            method="grpo", learning_rate=s["lr"], num_epochs=1000, logging_steps=10,
            num_generations=GRPO["num_generations"], max_completion_length=GRPO["max_completion_length"],
            temperature=GRPO["temperature"], rewards=[{"name": "format", "args": {"pattern": GRPO["pattern"]}}],
        ),
    )
    m = get_backend("trl").train_grpo(config, JsonlDataset.from_records(data), store=ArtifactStore(store)).metrics
    return {"steps": m["steps"], "runtime": m["train_runtime_s"], "steps_per_second": m["steps"] / m["train_runtime_s"]}


def mfu(model_dir: Path, tokens_per_second: float, peak_tflops: float) -> tuple[float, int]:
    import json as _json

    spec = _json.loads((model_dir / "provenir_tiny.json").read_text())
    params = int(spec["parameters"])
    # LoRA: forward (2N) and the activation gradients (2N) go through every weight, but the frozen
    # base weights get no weight gradient (the 2N that makes full fine-tuning 6N); the adapter's own
    # 6 x N_lora is under 1% here and left out, so the figure errs low, never high.
    return 4 * params * tokens_per_second / (peak_tflops * 1e12), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-size", choices=["tiny", "1b"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--records", type=int, default=800)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--only", default="sft,packing,grpo",
                        help="comma-separated row groups: sft (plain vs provenir, Ray), packing, grpo")
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument("--grpo-batch", type=int, default=16, help="completions per step (4 per prompt)")
    parser.add_argument("--peak-tflops", type=float, default=989.0)
    parser.add_argument("--repeats", type=int, default=2, help="alternate plain/provenir runs; best of each")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for the in-process runs (Ray workers use 1 per CPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    use_gpu = args.device == "cuda"
    if use_gpu:
        import torch

        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device here")
    root = Path(tempfile.mkdtemp(prefix="provenir-bench-train-"))
    model_dir = build_model(args.model_size, root)
    data = records(args.records, long=args.model_size == "1b")
    s = settings(args)
    s.update(grpo_steps=args.grpo_steps, grpo_batch=args.grpo_batch)
    groups = set(args.only.split(","))
    if not use_gpu:
        import torch

        torch.set_num_threads(args.threads)
    rows: list[tuple[str, dict]] = []
    report: dict[str, dict] = {}
    if "sft" in groups:
        _sft_rows(args, model_dir, data, s, use_gpu, root, rows)
    if "packing" in groups:
        for shape, short in (("uniform", records(args.records, long=False)),
                             ("long-tail", long_tail_records(args.records))):
            off, on = [], []
            for _ in range(args.repeats):
                off.append(provenir_packing(model_dir, short, s, use_gpu, root / "store", packing=False))
                on.append(provenir_packing(model_dir, short, s, use_gpu, root / "store", packing=True))
            report[f"{shape}/packing-off"] = max(off, key=lambda r: r["tokens_per_second"])
            report[f"{shape}/packing-on"] = max(on, key=lambda r: r["tokens_per_second"])
    if "grpo" in groups:
        prompts = grpo_prompts(max(64, args.records // 4))
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(plain_grpo(model_dir, prompts, s, use_gpu, root / "plain-grpo"))
            ours.append(provenir_grpo(model_dir, prompts, s, use_gpu, root / "store"))
        report["grpo-plain-trl"] = max(plain, key=lambda r: r["steps_per_second"])
        report["grpo-provenir"] = max(ours, key=lambda r: r["steps_per_second"])

    print(f"\nmodel={args.model_size} device={args.device} steps={args.steps} batch={args.batch_size} "
          f"threads={args.threads} best of {args.repeats} (tokens/s = non-padding tokens / train_runtime)")
    if rows:
        base = rows[0][1]["tokens_per_second"]
        print(f"{'workload':<14}{'tokens':>10}{'runtime s':>11}{'tokens/s':>11}{'vs plain-trl':>14}")
        for name, row in rows:
            ratio = row["tokens_per_second"] / base
            print(f"{name:<14}{row['tokens']:>10}{row['runtime']:>11.2f}{row['tokens_per_second']:>11.1f}{ratio:>14.3f}")
    if "uniform/packing-on" in report:
        print(f"\nshort records, batch {args.batch_size}, {args.steps} steps, packed rows of {s['max_len']} tokens")
        print(f"{'workload':<24}{'tokens':>10}{'runtime s':>11}{'tokens/s':>11}{'vs off':>10}")
        for shape in ("uniform", "long-tail"):
            off = report[f"{shape}/packing-off"]
            for name in (f"{shape}/packing-off", f"{shape}/packing-on"):
                row = report[name]
                ratio = row["tokens_per_second"] / off["tokens_per_second"]
                print(f"{name:<24}{row['tokens']:>10}{row['runtime']:>11.2f}{row['tokens_per_second']:>11.1f}"
                      f"{ratio:>10.3f}")
        for shape in ("uniform", "long-tail"):
            on, off = report[f"{shape}/packing-on"], report[f"{shape}/packing-off"]
            print(f"packing on/off, {shape}: {on['tokens_per_second'] / off['tokens_per_second']:.2f}x (target >= 2x)")
    if "grpo-provenir" in report:
        plain, ours = report["grpo-plain-trl"], report["grpo-provenir"]
        print(f"\nGRPO: {args.grpo_steps} steps, {args.grpo_batch} completions/step, group "
              f"{GRPO['num_generations']}, {GRPO['max_completion_length']} new tokens, LoRA r={s['rank']}")
        print(f"{'workload':<16}{'steps':>8}{'runtime s':>11}{'steps/s':>10}{'vs plain':>10}")
        for name in ("grpo-plain-trl", "grpo-provenir"):
            row = report[name]
            ratio = row["steps_per_second"] / plain["steps_per_second"]
            print(f"{name:<16}{row['steps']:>8}{row['runtime']:>11.2f}{row['steps_per_second']:>10.2f}{ratio:>10.3f}")
        print(f"GRPO provenir/plain: {ours['steps_per_second'] / plain['steps_per_second']:.3f}x (target >= 0.95x)")
    if use_gpu and rows:
        for name, row in rows:
            value, params = mfu(model_dir, row["tokens_per_second"], args.peak_tflops)
            print(f"MFU {name}: {value:.1%} (4·N·tokens/s for LoRA, N={params / 1e9:.2f}B, "
                  f"peak {args.peak_tflops} TFLOP/s)")
    if args.json:
        print(json.dumps({**{name: row for name, row in rows}, **report}, indent=1))


def _sft_rows(args, model_dir: Path, data: list[dict], s: dict, use_gpu: bool, root: Path,
              rows: list[tuple[str, dict]]) -> None:
    plain_runs, provenir_runs = [], []
    for _ in range(args.repeats):  # interleaved, so a noisy neighbour hits both alike
        plain_runs.append(plain_trl(model_dir, data, s, use_gpu, root / "plain"))
        provenir_runs.append(provenir_trl(model_dir, data, s, use_gpu, root / "store"))
    baseline = max(plain_runs, key=lambda r: r["tokens_per_second"])
    rows.append(("plain-trl", baseline))
    rows.append(("provenir-trl", max(provenir_runs, key=lambda r: r["tokens_per_second"])))
    if not args.skip_ray:
        import ray

        ray.init(num_cpus=max(2, os.cpu_count() or 2), include_dashboard=False, log_to_driver=False)
        import torch

        gpus = torch.cuda.device_count() if use_gpu else 0
        for workers in (1, 2):
            if use_gpu and workers > gpus:
                print(f"ray-ddp-{workers}: skipped, {gpus} GPU(s) here", flush=True)
                continue
            rows.append((f"ray-ddp-{workers}", provenir_trl(model_dir, data, s, use_gpu, root / "store", workers)))
        ray.shutdown()


if __name__ == "__main__":
    main()
