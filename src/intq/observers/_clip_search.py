"""MSE-optimal clipping: quantization error of a clip range (on data or a histogram) and its search.

A clip range ``[lo, hi]`` is scored with the grid the quantizer will build from it
(``intq.qmath``, round half to even, saturating): symmetric ``symmetric_qparams`` on the narrow
signed grid ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (scale ``max(-lo, hi)/(2^(b-1) - 1)``), affine
``affine_qparams`` on ``[0, 2^b - 1]`` (range relaxed to contain 0, nudged zero point).

Candidates are ``ratio·[lo, hi]`` of the observed range, ratio in [0.02, 1]: a grid with step 0.02,
then golden-section refinement around the best grid point (per channel, vectorized).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from intq.qmath import affine_qparams, fake_quantize, qrange, symmetric_qparams

__all__ = ["quantization_grid", "mse_on_rows", "mse_on_histogram", "search_clip_ratio"]

_RATIO_GRID = torch.linspace(0.02, 1.0, 50, dtype=torch.float64)
_REFINE_STEPS = 20
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


def quantization_grid(
    lo: Tensor, hi: Tensor, bits: int, symmetric: bool
) -> tuple[Tensor, Tensor, int, int]:
    """``(scale float32, zero_point int32, qmin, qmax)`` of the grid covering ``[lo, hi]`` (C,)."""
    if symmetric:
        qmin, qmax = qrange(bits, signed=True, narrow=True)
        return (*symmetric_qparams(lo, hi, qmin, qmax), qmin, qmax)
    qmin, qmax = qrange(bits, signed=False)
    return (*affine_qparams(lo, hi, qmin, qmax), qmin, qmax)


def mse_on_rows(rows: Tensor, lo: Tensor, hi: Tensor, bits: int, symmetric: bool) -> Tensor:
    """Mean of ``(x - fake_quantize(x))²`` per row of ``rows`` (C, N), clip ranges (C,), float64."""
    scale, zero_point, qmin, qmax = quantization_grid(lo, hi, bits, symmetric)
    error = fake_quantize(rows, scale, zero_point, qmin, qmax, axis=0) - rows
    return error.square().mean(dim=1).double()


def mse_on_histogram(
    counts: Tensor, edges: Tensor, lo: Tensor, hi: Tensor, bits: int, symmetric: bool
) -> Tensor:
    """Expected quantization MSE of values spread uniformly inside each histogram bin.

    ``counts`` (C, B), ``edges`` (C, B + 1) float64. Exact for that model: the squared error is
    integrated in closed form over each bin (see ``_squared_error_integral``).
    """
    scale, zero_point, qmin, qmax = quantization_grid(lo, hi, bits, symmetric)
    scale, zero_point = scale.double()[:, None], zero_point.double()[:, None]
    integral = _squared_error_integral(edges, scale, zero_point, qmin, qmax)
    per_bin = (integral[:, 1:] - integral[:, :-1]) / (edges[:, 1:] - edges[:, :-1])
    counts = counts.to(torch.float64)
    return (counts * per_bin).sum(dim=1) / counts.sum(dim=1)


def _squared_error_integral(
    u: Tensor, scale: Tensor, zero_point: Tensor, qmin: int, qmax: int
) -> Tensor:
    """An antiderivative ``F(u)`` of ``(u - Q(u))²``, Q the saturating grid ``quantization_grid``.

    Between the outermost levels ``low = (qmin - z)·s`` and ``high = (qmax - z)·s`` the error is
    ``s·(v - round(v))`` with ``v = u/s``; ``(w - round(w))²`` has the continuous antiderivative
    ``n/12 + f³/3`` (``n = floor(w + 1/2)``, ``f = w - n``: 1/12 per unit cell). Beyond them
    the error is ``u - high`` or ``low - u``.
    """
    low, high = (qmin - zero_point) * scale, (qmax - zero_point) * scale
    v = torch.minimum(torch.maximum(u, low), high) / scale
    n = torch.floor(v + 0.5)
    f = v - n
    inner = scale**3 * (n / 12.0 + f**3 / 3.0)
    return inner + ((u - high).clamp(min=0) ** 3 - (low - u).clamp(min=0) ** 3) / 3.0


def search_clip_ratio(
    loss: Callable[[Tensor], Tensor], num_channels: int, device: torch.device
) -> Tensor:
    """Per-channel ratio in [0.02, 1] minimizing ``loss(ratio (C,)) -> (C,)``, float64 (C,).

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
