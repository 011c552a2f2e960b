"""MSE-optimal clipping: quantization error of a clip range (on data or a histogram) and its search.

A clip range ``[lo, hi]`` is scored with the grid the quantizer will build from it
(``intq.qmath``, round half to even, saturating): symmetric ``symmetric_qparams`` on the narrow
signed grid ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (scale ``max(-lo, hi)/(2^(b-1) - 1)``), affine
``affine_qparams`` on ``[0, 2^b - 1]`` (range relaxed to contain 0, nudged zero point).

Candidates are ``ratio·[lo, hi]`` of the observed range, ratio in [0.02, 1]: a grid of 25 points
(step 0.041), then three finer grids of ``_REFINE_POINTS`` across the two steps around the best
point so far (the final step is about 8e-5). Every level scores all its candidates of all
channels in one vectorized call (chunked to bound memory): a few large tensor ops instead of many
small ones, which on a busy machine each pay a thread wake-up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from intq.qmath import affine_qparams, fake_quantize, qrange, symmetric_qparams
from intq.threads import single_intra_op_thread

__all__ = ["quantization_grid", "mse_on_rows", "mse_on_histogram", "search_clip_ratio"]

_RATIO_GRID = torch.linspace(0.02, 1.0, 25, dtype=torch.float64)
_REFINE_POINTS = 17
_REFINE_LEVELS = 3
_CHUNK_ELEMENTS = 2**21  # (channels x candidates x values) scored at once: 16 MiB per float64


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
    """Mean of ``(x - fake_quantize(x))²`` per row of ``rows`` (C, N) and clip range ``[lo, hi]``
    ((C,) or (C, K) candidates per row), float64 of the shape of ``lo``."""
    lo2, hi2 = lo.reshape(len(rows), -1), hi.reshape(len(rows), -1)
    scale, zero_point, qmin, qmax = quantization_grid(lo2.reshape(-1), hi2.reshape(-1), bits,
                                                      symmetric)
    candidates = lo2.shape[1]
    x = rows[:, None, :].expand(-1, candidates, -1).reshape(-1, rows.shape[1])
    error = fake_quantize(x, scale, zero_point, qmin, qmax, axis=0) - x
    return error.square().mean(dim=1).double().reshape(lo.shape)


def mse_on_histogram(
    counts: Tensor, edges: Tensor, lo: Tensor, hi: Tensor, bits: int, symmetric: bool
) -> Tensor:
    """Expected quantization MSE of values spread uniformly inside each histogram bin.

    ``counts`` (C, B), ``edges`` (C, B + 1) float64, clip range ``[lo, hi]`` ((C,) or (C, K)
    candidates per channel); float64 of the shape of ``lo``. Exact for that model: the squared
    error is integrated in closed form over each bin (see ``_squared_error_integral``).
    """
    lo2, hi2 = lo.reshape(len(counts), -1), hi.reshape(len(counts), -1)
    scale, zero_point, qmin, qmax = quantization_grid(lo2.reshape(-1), hi2.reshape(-1), bits,
                                                      symmetric)
    scale = scale.double().reshape(lo2.shape)[:, :, None]
    zero_point = zero_point.double().reshape(lo2.shape)[:, :, None]
    integral = _squared_error_integral(edges[:, None, :], scale, zero_point, qmin, qmax)
    widths = (edges[:, 1:] - edges[:, :-1])[:, None, :]
    per_bin = (integral[:, :, 1:] - integral[:, :, :-1]) / widths
    counts = counts.to(torch.float64)
    mse = (counts[:, None, :] * per_bin).sum(dim=2) / counts.sum(dim=1, keepdim=True)
    return mse.reshape(lo.shape)


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
    loss: Callable[[Tensor], Tensor], num_channels: int, values_per_channel: int,
    device: torch.device,
) -> Tensor:
    """Per-channel ratio in [0.02, 1] minimizing ``loss(ratio (C, K)) -> (C, K)``, float64 (C,).

    The coarse grid, then ``_REFINE_LEVELS`` grids of ``_REFINE_POINTS`` spanning one step
    either side of the best ratio so far; the best ratio scored at any level is returned.
    ``values_per_channel`` (bins or row length) sizes the chunks of candidates scored at once.
    Runs on one intra-op thread (``intq.threads``): its tensors are small (2.5x faster than
    with two threads on a moderately busy 2-core machine).
    """
    with single_intra_op_thread():
        return _search(loss, num_channels, values_per_channel, device)


def _search(
    loss: Callable[[Tensor], Tensor], num_channels: int, values_per_channel: int,
    device: torch.device,
) -> Tensor:
    chunk = max(1, _CHUNK_ELEMENTS // (num_channels * max(values_per_channel, 1)))

    def scored(ratios: Tensor) -> Tensor:
        return torch.cat([loss(part) for part in ratios.split(chunk, dim=1)], dim=1)

    ratios = _RATIO_GRID.to(device).expand(num_channels, -1)
    best_ratio, best_loss = _lowest(ratios, scored(ratios))
    step = float(_RATIO_GRID[1] - _RATIO_GRID[0])
    offsets = torch.linspace(-1.0, 1.0, _REFINE_POINTS, dtype=torch.float64, device=device)
    for _ in range(_REFINE_LEVELS):
        ratios = (best_ratio[:, None] + step * offsets).clamp(float(_RATIO_GRID[0]), 1.0)
        ratio, value = _lowest(ratios, scored(ratios))
        better = value < best_loss
        best_ratio = torch.where(better, ratio, best_ratio)
        best_loss = torch.where(better, value, best_loss)
        step = 2 * step / (_REFINE_POINTS - 1)
    return best_ratio


def _lowest(ratios: Tensor, losses: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the ratio with the lowest loss (the first on ties) and that loss."""
    index = losses.argmin(dim=1, keepdim=True)
    return ratios.gather(1, index).squeeze(1), losses.gather(1, index).squeeze(1)
