"""MSE-optimal clipping: quantization error of a clip range (on data or a histogram) and its search.

The grid of a clip range ``[lo, hi]`` at ``bits`` (round half to even, saturating):

- symmetric: ``t = max(-lo, hi)``, ``scale = t/(2^(b-1) - 1)``, zero point 0, narrow levels
  ``[-(2^(b-1) - 1), 2^(b-1) - 1]``;
- affine: ``[lo, hi]`` relaxed to contain 0, ``scale = (hi - lo)/(2^b - 1)``,
  ``zero_point = clamp(round(-lo/scale), 0, 2^b - 1)``, levels ``[0, 2^b - 1]``.

Candidates are ``ratio·[lo, hi]`` of the observed range, ratio in [0.3, 1]: a grid with step 0.02,
then golden-section refinement around the best grid point (per channel, vectorized).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["quantization_grid", "mse_on_rows", "mse_on_histogram", "search_clip_ratio"]

_RATIO_GRID = torch.linspace(0.3, 1.0, 36, dtype=torch.float64)
_REFINE_STEPS = 20
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def quantization_grid(
    lo: Tensor, hi: Tensor, bits: int, symmetric: bool
) -> tuple[Tensor, Tensor, int, int]:
    """``(scale, zero_point, qmin, qmax)`` of the grid covering ``[lo, hi]`` (float64, per channel).

    A zero-width range gets scale 1 (its values are all 0 and quantize exactly).
    """
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = torch.maximum(-lo, hi) / qmax
        scale = torch.where(scale > 0, scale, 1.0)
        return scale, torch.zeros_like(scale), -qmax, qmax
    qmax = 2**bits - 1
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    scale = (hi - lo) / qmax
    scale = torch.where(scale > 0, scale, 1.0)
    zero_point = torch.round(-lo / scale).clamp(0, qmax)
    return scale, zero_point, 0, qmax


def mse_on_rows(rows: Tensor, lo: Tensor, hi: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Mean of ``(x - fake_quant_half_even(x))²`` per row of ``rows`` (C, N), clip ranges (C,)."""
    scale, zero_point, qmin, qmax = quantization_grid(lo, hi, bits, symmetric)
    scale = scale.to(rows.dtype)[:, None]
    zero_point = zero_point.to(rows.dtype)[:, None]
    levels = torch.clamp(torch.round(rows / scale) + zero_point, qmin, qmax)
    return ((levels - zero_point) * scale - rows).square().mean(dim=1).double()


def mse_on_histogram(
    counts: Tensor, edges: Tensor, lo: Tensor, hi: Tensor, bits: int, symmetric: bool
) -> Tensor:
    """Expected quantization MSE of values spread uniformly inside each histogram bin.

    ``counts`` (C, B), ``edges`` (C, B + 1) float64. Exact for that model: the squared error is
    integrated in closed form over each bin (see ``_squared_error_integral``).
    """
    scale, zero_point, qmin, qmax = quantization_grid(lo, hi, bits, symmetric)
    integral = _squared_error_integral(edges, scale[:, None], zero_point[:, None], qmin, qmax)
    per_bin = (integral[:, 1:] - integral[:, :-1]) / (edges[:, 1:] - edges[:, :-1])
    counts = counts.to(torch.float64)
    return (counts * per_bin).sum(dim=1) / counts.sum(dim=1)


def _squared_error_integral(
    u: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int
) -> Tensor:
    """An antiderivative ``F(u)`` of ``(u - Q(u))²``, Q the saturating grid ``quantization_grid``.

    Between the outermost levels ``low = (qmin - z)·s`` and ``high = (qmax - z)·s`` the error is
    ``s·(v - round(v))`` with ``v = u/s``, and
    ``∫_{-1/2}^{v} (w - round(w))² dw = n/12 + (f³ + 1/8)/3``, ``n = floor(v + 1/2)``,
    ``f = v - n``; beyond them the error is ``u - high`` or ``low - u``.
    """
    low, high = (qmin - zero_point) * scale, (qmax - zero_point) * scale
    v = torch.minimum(torch.maximum(u, low), high) / scale
    n = torch.floor(v + 0.5)
    f = v - n
    inner = scale**3 * (n / 12.0 + (f**3 + 0.125) / 3.0)
    return inner + ((u - high).clamp(min=0) ** 3 - (low - u).clamp(min=0) ** 3) / 3.0


def search_clip_ratio(
    loss: Callable[[Tensor], Tensor], num_channels: int, device: torch.device
) -> Tensor:
    """Per-channel ratio in [0.3, 1] minimizing ``loss(ratio (C,)) -> (C,)``, float64 (C,).

    Grid search, then golden-section refinement on the two grid steps around the best point;
    the best of the grid point and the refined point is returned.
    """
    grid = _RATIO_GRID.to(device)
    losses = torch.stack([loss(grid[i].expand(num_channels)) for i in range(len(grid))], dim=1)
    best = losses.argmin(dim=1)
    best_ratio, best_loss = grid[best], losses.gather(1, best[:, None]).squeeze(1)
    a, b = grid[(best - 1).clamp(min=0)], grid[(best + 1).clamp(max=len(grid) - 1)]
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    loss_c, loss_d = loss(c), loss(d)
    for _ in range(_REFINE_STEPS):
        keep_left = loss_c <= loss_d
        a, b = torch.where(keep_left, a, c), torch.where(keep_left, d, b)
        probe = torch.where(keep_left, b - _GOLDEN * (b - a), a + _GOLDEN * (b - a))
        loss_probe = loss(probe)
        c, d, loss_c, loss_d = (
            torch.where(keep_left, probe, d),
            torch.where(keep_left, c, probe),
            torch.where(keep_left, loss_probe, loss_d),
            torch.where(keep_left, loss_c, loss_probe),
        )
    refined, refined_loss = torch.where(loss_c <= loss_d, c, d), torch.minimum(loss_c, loss_d)
    return torch.where(refined_loss < best_loss, refined, best_ratio)
