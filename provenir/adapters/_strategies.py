"""Merge strategies over LoRA weight updates, one module at a time, chosen by name from a registry.

Each strategy receives, for one adapted module, every adapter's factors ``(A_i, B_i)`` and scaling
``s_i`` (so that ``ΔW_i = s_i · B_i @ A_i``) and returns the merged update either exactly as new
factors (SLERP: the result lies in the span of the inputs, so concatenating the factors with
per-row coefficients is exact) or as a dense ``ΔW`` that the merger factorises back to LoRA with a
truncated SVD (TIES and DARE: sparsification makes the update full-rank).

TIES and DARE call PEFT's own implementations (``peft.utils.merge_utils.ties``, ``dare_ties``,
``dare_linear``) — the code ``LoraModel.add_weighted_adapter`` runs for its ``*_svd`` combination
types — so the arithmetic is the well-kept library's; what Provenir adds is doing it from the
adapter files (no base model in memory), seeding DARE's random masks per module, and recording it.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: mergekit's threshold: above this |cos θ| two rows are treated as collinear and interpolated linearly.
SLERP_DOT_THRESHOLD = 0.9995
SLERP_EPS = 1e-8


@dataclass(frozen=True)
class ModuleInputs:
    """One module's factors across the adapters being merged (compute dtype, compute device)."""

    name: str
    a: list[torch.Tensor]  # r_i x in
    b: list[torch.Tensor]  # out x r_i
    scaling: list[float]
    embedding: bool

    def delta(self, index: int) -> torch.Tensor:
        return (self.b[index] @ self.a[index]) * self.scaling[index]


@dataclass(frozen=True)
class MergedModule:
    """A strategy's answer: exact factors (``b @ a`` is the update) or a dense update to factorise."""

    a: torch.Tensor | None = None
    b: torch.Tensor | None = None
    dense: torch.Tensor | None = None


@dataclass(frozen=True)
class StrategyParams:
    weights: list[float]
    density: float
    t: float
    seed: int
    majority_sign_method: str
    dare_variant: str


StrategyFn = Callable[[ModuleInputs, StrategyParams], MergedModule]
STRATEGIES: dict[str, StrategyFn] = {}


def register(name: str) -> Callable[[StrategyFn], StrategyFn]:
    def decorate(fn: StrategyFn) -> StrategyFn:
        STRATEGIES[name] = fn
        return fn

    return decorate


def _slerp_rows(
    a0: torch.Tensor, b0: torch.Tensor, s0: float, a1: torch.Tensor, b1: torch.Tensor, s1: float, t: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-wise SLERP of ``s0·b0@a0`` and ``s1·b1@a1`` (mergekit's formula), returned as exact factors.

    Row norms and dot products come from r x r Gram matrices (``‖ΔW[r]‖² = s² b[r] (a aᵀ) b[r]ᵀ``),
    so the full update is never built. The coefficients are applied to the unnormalised rows, as
    mergekit does, and the result ``diag(c0)ΔW0 + diag(c1)ΔW1`` is written as ``[c0·s0·b0, c1·s1·b1] @ [a0; a1]``.
    """
    import torch

    f64 = torch.float64
    a0d, b0d, a1d, b1d = a0.to(f64), b0.to(f64), a1.to(f64), b1.to(f64)
    g00, g11, g01 = a0d @ a0d.T, a1d @ a1d.T, a0d @ a1d.T
    sq0 = ((b0d @ g00) * b0d).sum(dim=1).clamp_min(0) * s0 * s0
    sq1 = ((b1d @ g11) * b1d).sum(dim=1).clamp_min(0) * s1 * s1
    raw_dot = ((b0d @ g01) * b1d).sum(dim=1) * s0 * s1
    norm0 = sq0.sqrt()
    norm1 = sq1.sqrt()
    norm0 = torch.where(norm0 > SLERP_EPS, norm0, torch.ones_like(norm0))
    norm1 = torch.where(norm1 > SLERP_EPS, norm1, torch.ones_like(norm1))
    dot = (raw_dot / (norm0 * norm1)).clamp(-1, 1)
    linear = dot.abs() > SLERP_DOT_THRESHOLD
    theta = torch.acos(torch.where(linear, torch.zeros_like(dot), dot))
    sin_theta = torch.sin(theta)
    safe_sin = torch.where(linear, torch.ones_like(sin_theta), sin_theta)
    coef0 = torch.where(linear, torch.full_like(dot, 1 - t), torch.sin((1 - t) * theta) / safe_sin)
    coef1 = torch.where(linear, torch.full_like(dot, t), torch.sin(t * theta) / safe_sin)
    b_out = torch.cat([b0d * (coef0 * s0)[:, None], b1d * (coef1 * s1)[:, None]], dim=1)
    a_out = torch.cat([a0d, a1d], dim=0)
    return a_out.to(a0.dtype), b_out.to(b0.dtype)


@register("slerp")
def slerp(module: ModuleInputs, params: StrategyParams) -> MergedModule:
    """Spherical interpolation between two adapters' updates, row by row of the adapted weight.

    ``t`` is the second adapter's share (0 gives the first adapter, 1 the second). For embedding
    modules the adapted weight is ``ΔWᵀ`` (PEFT's layout), so its rows are interpolated.
    """
    (a0, a1), (b0, b1), (s0, s1) = module.a, module.b, module.scaling
    if module.embedding:  # weight = (B @ A)ᵀ = Aᵀ @ Bᵀ: swap roles so rows of the weight are used
        a_t, b_t = _slerp_rows(b0.T, a0.T, s0, b1.T, a1.T, s1, params.t)
        return MergedModule(a=b_t.T, b=a_t.T)
    a_out, b_out = _slerp_rows(a0, b0, s0, a1, b1, s1, params.t)
    return MergedModule(a=a_out, b=b_out)


def _module_seed(seed: int, module: str) -> int:
    """A per-module seed, so each module's random mask is the same whatever order modules run in."""
    digest = hashlib.sha256(f"{seed}:{module}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


@register("ties")
def ties(module: ModuleInputs, params: StrategyParams) -> MergedModule:
    """TIES-merging (Yadav et al. 2023): keep the top-``density`` entries of each update by
    magnitude, elect a sign per entry, average the weighted entries that agree with it."""
    import torch
    from peft.utils.merge_utils import ties as peft_ties

    deltas = [module.delta(i) for i in range(len(module.a))]
    weights = torch.tensor(params.weights, dtype=deltas[0].dtype, device=deltas[0].device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PEFT warns that density 1.0 prunes nothing: intended
        dense = peft_ties(deltas, weights, params.density, params.majority_sign_method)  # type: ignore[arg-type]
    return MergedModule(dense=dense)


@register("dare")
def dare(module: ModuleInputs, params: StrategyParams) -> MergedModule:
    """DARE (Yu et al. 2024): drop each entry of each update with probability ``1 - density`` and
    rescale the survivors by ``1 / density``; then combine by TIES sign election (``dare_ties``) or a
    weighted sum (``dare_linear``). Masks are drawn from a generator seeded by (seed, module name)."""
    import torch
    from peft.utils.merge_utils import dare_linear, dare_ties

    deltas = [module.delta(i) for i in range(len(module.a))]
    weights = torch.tensor(params.weights, dtype=deltas[0].dtype, device=deltas[0].device)
    device = deltas[0].device
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(_module_seed(params.seed, module.name))
        if params.dare_variant == "ties":
            dense = dare_ties(deltas, weights, params.density, params.majority_sign_method)  # type: ignore[arg-type]
        else:
            dense = dare_linear(deltas, weights, params.density)
    return MergedModule(dense=dense)


def factorize(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Best rank-``rank`` factors ``(A, B)`` of ``delta`` (truncated SVD, balanced ``√S`` split) and
    the relative Frobenius error of the approximation."""
    import torch

    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    k = min(rank, s.shape[0])
    root = s[:k].sqrt()
    b = u[:, :k] * root[None, :]
    a = root[:, None] * vh[:k, :]
    total = float(torch.linalg.vector_norm(s))
    lost = float(torch.linalg.vector_norm(s[k:])) if k < s.shape[0] else 0.0
    if k < rank:  # keep the requested rank so every module has the same r (zero padding is exact)
        a = torch.cat([a, a.new_zeros(rank - k, a.shape[1])], dim=0)
        b = torch.cat([b, b.new_zeros(b.shape[0], rank - k)], dim=1)
    return a, b, (lost / total if total > 0 else 0.0)


def describe() -> dict[str, Any]:
    """Strategy names and their one-line summaries (for ``provenir merge --help`` and docs)."""
    return {name: (fn.__doc__ or "").strip().splitlines()[0] for name, fn in sorted(STRATEGIES.items())}
