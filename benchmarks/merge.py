"""Benchmark: merging two LoRA adapters with Provenir vs PEFT's ``add_weighted_adapter``.

Workload: a random Llama (hidden 1024, intermediate 2816, ``--layers`` layers (default 2), 4k vocab) and two
rank-16 LoRA adapters on every linear layer of its blocks. Each merge runs in a fresh subprocess so
its wall time, CPU time (user + system; fairer than wall time on a shared machine) and peak
resident memory (``ru_maxrss``) are its own; the ratios are baseline / Provenir CPU time and memory:

* TIES: Provenir (reads the adapter files, no base model) vs PEFT ``add_weighted_adapter(
  combination_type="ties_svd")`` on the loaded base model, then ``save_pretrained`` of the result.
* SLERP: Provenir (exact, on the factors) vs the dense route (form each ΔW, mergekit's ``slerp``,
  SVD back to rank r1 + r2), written here as the baseline.

Run: ``.venv/bin/python benchmarks/merge.py [--layers 2]``. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HIDDEN, INTERMEDIATE, VOCAB, RANK = 1024, 2816, 4096, 16
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(root: Path, layers: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=HIDDEN,
        intermediate_size=INTERMEDIATE,
        num_hidden_layers=layers,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=VOCAB,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(root / "base")
    for name, seed in (("a", 1), ("b", 2)):
        model = LlamaForCausalLM.from_pretrained(root / "base")
        torch.manual_seed(seed)
        lora = LoraConfig(r=RANK, lora_alpha=32, target_modules=TARGETS, init_lora_weights=False)
        get_peft_model(model, lora).save_pretrained(root / name)


def run_provenir(root: Path, strategy: str) -> None:
    from provenir.adapters.merging import MergeConfig, ModelMerger

    config = MergeConfig(strategy=strategy, density=0.5) if strategy != "slerp" else MergeConfig(t=0.5)
    ModelMerger().merge([root / "a", root / "b"], config, root / f"out-provenir-{strategy}", overwrite=True)


def run_peft_ties(root: Path) -> None:
    from peft import PeftModel
    from transformers import LlamaForCausalLM

    model = PeftModel.from_pretrained(LlamaForCausalLM.from_pretrained(root / "base"), root / "a", adapter_name="a")
    model.load_adapter(root / "b", adapter_name="b")
    model.add_weighted_adapter(["a", "b"], [1.0, 1.0], "ties", combination_type="ties_svd", svd_rank=2 * RANK, density=0.5)
    model.delete_adapter("a")
    model.delete_adapter("b")
    model.save_pretrained(root / "out-peft-ties", selected_adapters=["ties"])


def run_dense_slerp(root: Path) -> None:
    import torch
    from mergekit.merge_methods.slerp import slerp
    from safetensors.torch import load_file, save_file

    a, b = load_file(root / "a" / "adapter_model.safetensors"), load_file(root / "b" / "adapter_model.safetensors")
    scaling = 32 / RANK
    out = {}
    for key in a:
        if not key.endswith("lora_A.weight"):
            continue
        module = key[: -len(".lora_A.weight")]
        da = scaling * a[f"{module}.lora_B.weight"] @ a[key]
        db = scaling * b[f"{module}.lora_B.weight"] @ b[key]
        merged = slerp(torch.tensor(0.5), da, db)
        u, s, vh = torch.linalg.svd(merged, full_matrices=False)
        out[f"{module}.lora_B.weight"] = (u[:, : 2 * RANK] * s[: 2 * RANK]).contiguous()
        out[key] = vh[: 2 * RANK].contiguous()
    (root / "out-dense-slerp").mkdir(exist_ok=True)
    save_file(out, root / "out-dense-slerp" / "adapter_model.safetensors")


JOBS = {
    "provenir-ties": lambda root: run_provenir(root, "ties"),
    "provenir-dare": lambda root: run_provenir(root, "dare"),
    "provenir-slerp": lambda root: run_provenir(root, "slerp"),
    "peft-ties": run_peft_ties,
    "dense-slerp": run_dense_slerp,
}


def child(job: str, root: Path) -> None:
    import torch  # imports are not part of the measurement

    import peft  # noqa: F401
    import transformers  # noqa: F401

    torch.set_num_threads(2)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    JOBS[job](root)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_mib": after.ru_maxrss / 1024}))


def measure(job: str, root: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", job, "--root", str(root)], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    sys.stdout.reconfigure(line_buffering=True)  # rows show as they are measured

    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--child")
    parser.add_argument("--root")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.root))
        return
    with tempfile.TemporaryDirectory(prefix="provenir-bench-merge-") as tmp:
        root = Path(tmp)
        build(root, args.layers)
        base_mib = sum(f.stat().st_size for f in (root / "base").glob("*.safetensors")) / 2**20
        print(f"base model {base_mib:.0f} MiB on disk, {args.layers} layers, 2 adapters of rank {RANK} on {len(TARGETS)} projections")
        rows = [
            ("TIES (density 0.5)", "provenir-ties", "peft-ties", "PEFT add_weighted_adapter ties_svd"),
            ("SLERP (t 0.5)", "provenir-slerp", "dense-slerp", "dense ΔW + mergekit slerp + SVD"),
        ]
        header = (
            f"{'workload':<20} {'provenir s':>10} {'cpu s':>7} {'MiB':>6} {'baseline s':>10} {'cpu s':>7} {'MiB':>6} "
            f"{'cpu x':>6} {'mem x':>6}  baseline"
        )
        print(header)
        print("-" * len(header))
        for label, ours, theirs, name in rows:
            a, b = measure(ours, root), measure(theirs, root)
            print(
                f"{label:<20} {a['seconds']:>10.2f} {a['cpu_seconds']:>7.1f} {a['peak_mib']:>6.0f} {b['seconds']:>10.2f} "
                f"{b['cpu_seconds']:>7.1f} {b['peak_mib']:>6.0f} {b['cpu_seconds'] / a['cpu_seconds']:>6.2f} "
                f"{b['peak_mib'] / a['peak_mib']:>6.2f}  {name}"
            )
        dare = measure("provenir-dare", root)
        print(
            f"{'DARE-TIES (0.5)':<20} {dare['seconds']:>10.2f} {dare['cpu_seconds']:>7.1f} {dare['peak_mib']:>6.0f} "
            f"{'-':>10} {'-':>7} {'-':>6} {'-':>6} {'-':>6}  (no PEFT baseline with a seed)"
        )


if __name__ == "__main__":
    main()
