"""Seeding and deterministic algorithms for one training process (or Ray Train worker)."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, also force deterministic kernels.

    ``transformers.enable_full_determinism`` seeds every generator, turns on
    ``torch.use_deterministic_algorithms`` and sets the cuBLAS/cuDNN switches that make GPU
    reductions repeatable.
    """
    import numpy as np
    import torch

    if deterministic:
        from transformers import enable_full_determinism

        enable_full_determinism(seed)
        # Deterministic mode also fills every torch.empty() with NaN, which costs more than the
        # training step on CPU (TRL's chunked log-prob buffers); kernels never read that memory,
        # so the weights are the same bytes without it (tests assert bit-identical adapters).
        torch.utils.deterministic.fill_uninitialized_memory = False
    else:
        from transformers import set_seed

        set_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def determinism_scope() -> Iterator[None]:
    """Restore torch's deterministic-algorithms switch and the env vars it needs afterwards.

    Training in process must not leave the caller's process in a different mode.
    """
    import torch

    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    env = {k: os.environ.get(k) for k in ("CUBLAS_WORKSPACE_CONFIG", "FLASH_ATTENTION_DETERMINISTIC")}
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    fill = torch.utils.deterministic.fill_uninitialized_memory
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        torch.utils.deterministic.fill_uninitialized_memory = fill
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
