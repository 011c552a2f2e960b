"""KL observer: entropy calibration (TensorRT, Migacz 2017, "8-bit inference with TensorRT").

On a histogram of ``|x|`` (``bins`` capacity, default 2048; ``n`` occupied bins, n in
[bins/2, bins]) and ``L = 2^(bits-1)`` quantized levels (128 at 8 bits), for every candidate
threshold of ``i`` bins, ``L <= i <= n``:

- P: bins ``0..i-1`` of the histogram, the outliers (all counts beyond ``i``) added to bin i-1;
- Q: bins ``0..i-1`` without outliers summed into ``L`` levels of ``i // L`` bins (the last level
  takes the remainder), each level's sum spread evenly over its bins where P is non-zero, 0
  elsewhere;
- both smoothed (eps = 1e-4 moved from non-zero bins onto zero bins), normalized, and scored by
  ``KL(P || Q) = sum P·log(P/Q)``.

The threshold is the upper edge ``i·width`` of the best candidate (the first one on ties), capped
at ``max|x|``. Candidates are scored together in blocks of (candidates, bins) matrices; the cost
grows as bins² (about 0.1 s for 2048 bins on one core).
"""

from __future__ import annotations

import torch
from torch import Tensor

from intq.observers.histogram import HistogramObserver

__all__ = ["KLObserver", "kl_threshold_bins"]

_SMOOTHING_EPS = 1e-4
_BLOCK_ELEMENTS = 2**19  # (candidates x bins) entries scored at once: 4 MiB per float64 matrix


class KLObserver(HistogramObserver):
    """Threshold ``t`` on ``|x|`` minimizing KL(P || Q) between float and quantized histograms.

    Symmetric: ``ranges() = (-t, t)``. Affine: the observed range clipped to the threshold,
    ``(max(min x, -t), min(max x, t))``; one-sided affine data (min >= 0, e.g. after a ReLU)
    has all ``2^bits`` levels on [0, t], so it is searched with ``L = 2^bits``. Bin 0 (the
    zero spike) is left out of the search. If the histogram has no more occupied bins than levels
    (e.g. bits > 11 at 2048 bins) nothing is clipped: ``t = max|x|``. Per channel, each channel
    is searched in turn. ``merge`` is exact (the histogram is canonical, see ``histogram``).
    """

    kind = "kl"

    def __init__(
        self,
        *,
        per_channel: bool = False,
        axis: int = 0,
        bits: int = 8,
        symmetric: bool = False,
        bins: int = 2048,
    ) -> None:
        super().__init__(
            per_channel=per_channel,
            axis=axis,
            bits=bits,
            symmetric=symmetric,
            bins=bins,
            magnitude=True,
        )
        self.reset()

    def _ranges(self) -> tuple[Tensor, Tensor]:
        one_sided = not self.symmetric and bool((self.min_val >= 0).all())
        levels = 2 ** (self.bits if one_sided else self.bits - 1)
        kept = torch.stack([kl_threshold_bins(_without_zero_bin(row), levels)
                            for row in self.counts])
        _, max_abs = self.value_range()
        threshold = torch.minimum(kept.to(torch.float64) * self.bin_width(), max_abs)
        if self.symmetric:
            return -threshold, threshold
        return torch.maximum(self.min_val.double(), -threshold), torch.minimum(
            self.max_val.double(), threshold
        )


def _without_zero_bin(counts: Tensor) -> Tensor:
    """``counts`` with bin 0 emptied: the spike of exact zeros a ReLU leaves is exact on every
    grid (0 is representable), yet it would dominate KL(P || Q) and drive the threshold down."""
    out = counts.clone()
    if bool(out[1:].any()):
        out[0] = 0
    return out


def kl_threshold_bins(counts: Tensor, levels: int) -> Tensor:
    """Number of leading bins ``i`` of the |x| histogram ``counts`` (B,) minimizing KL(P || Q).

    Returns the occupied bin count when it is at most ``levels`` (no clipping candidate).
    """
    occupied = int(torch.nonzero(counts).max()) + 1
    if occupied <= levels:
        return torch.tensor(occupied, device=counts.device)
    hist = counts[:occupied].to(torch.float64)
    candidates = torch.arange(levels, occupied + 1, device=counts.device)
    blocks = candidates.split(max(1, _BLOCK_ELEMENTS // occupied))
    divergence = torch.cat([_kl_divergences(hist, block, levels) for block in blocks])
    return candidates[divergence.argmin()]


def _kl_divergences(hist: Tensor, kept: Tensor, levels: int) -> Tensor:
    """KL(P || Q) for each candidate bin count in ``kept`` (K,) over the histogram ``hist`` (n,)."""
    rows = torch.arange(len(kept), device=hist.device)
    j = torch.arange(len(hist), device=hist.device)
    inside = j < kept[:, None]
    sliced = torch.where(inside, hist, 0.0)
    p = sliced.clone()
    p[rows, kept - 1] += hist.sum() - hist.cumsum(0)[kept - 1]
    level = torch.clamp(j // (kept // levels)[:, None], max=levels - 1)
    nonzero = p > 0
    level_sum = torch.zeros(len(kept), levels, dtype=torch.float64, device=hist.device)
    level_sum.scatter_add_(1, level, sliced)
    level_nonzero = torch.zeros_like(level_sum).scatter_add_(1, level, nonzero.to(torch.float64))
    spread = (level_sum / level_nonzero.clamp(min=1)).gather(1, level)
    q = torch.where(nonzero, spread, 0.0)
    p, q = _smooth(p, inside), _smooth(q, inside)
    terms = torch.where(inside, p * torch.log(p / q), 0.0).sum(dim=1)
    return torch.where(level_sum.sum(dim=1) > 0, terms, torch.inf)


def _smooth(x: Tensor, inside: Tensor) -> Tensor:
    """Normalized ``x`` with eps moved onto its zero entries (TensorRT/MXNet smoothing), per row.

    Zero entries get ``eps``; non-zero ones lose ``eps·zeros/nonzeros`` (floored at eps so that
    the result stays positive). Entries outside ``inside`` stay 0.
    """
    zero = inside & (x == 0)
    zeros = zero.sum(dim=1, keepdim=True)
    nonzeros = (inside.sum(dim=1, keepdim=True) - zeros).clamp(min=1)
    taken = _SMOOTHING_EPS * zeros / nonzeros
    smoothed = torch.where(zero, _SMOOTHING_EPS, (x - taken).clamp(min=_SMOOTHING_EPS))
    smoothed = torch.where(inside, smoothed, 0.0)
    return smoothed / smoothed.sum(dim=1, keepdim=True)
