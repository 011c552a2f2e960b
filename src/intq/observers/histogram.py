"""Mergeable histogram with power-of-two bins aligned at 0: the state of the histogram observers.

Bin ``k`` of a channel covers ``[k·2^e, (k+1)·2^e)``; a channel stores ``bins`` consecutive bins
starting at bin ``offset``. After every update or merge the window is canonical:

- ``e`` is the smallest integer >= ``MIN_EXPONENT`` such that the observed range relaxed to
  contain 0, ``[lo, hi] = [min(min_val, 0), max(max_val, 0)]``, spans at most ``bins`` bins:
  ``floor(hi/2^e) - floor(lo/2^e) <= bins - 1``;
- ``offset = floor(lo/2^e)``.

The observed range only grows, so ``e`` only grows. Widening from ``e`` to ``e + s`` moves the
count of bin ``k`` to bin ``k >> s`` (floor division by ``2^s``, exact), and a value binned at
``e`` then widened lands where binning it at ``e + s`` directly puts it. The counts are therefore
a function of the multiset of observed values alone: any split of the data, fed in any order or
merged from partial histograms, gives identical buffers. A window holds between ``bins/2`` and
``bins`` occupied bins (the width is within a factor 2 of the finest that fits).

Values are histogrammed signed, or as ``|x|`` with ``magnitude=True`` (then ``lo = 0``); the exact
signed ``min_val``/``max_val`` are kept either way.

Sampling (``sample_size``): an update of N > ``sample_size`` values per channel counts the evenly
strided sample ``x[::s]``, each sampled value ``s`` times, with ``s = ceil(N/sample_size)``
rounded up to odd (so it does not alias with even image widths). The counts estimate those of
every value without bias and then depend on the values' order; the extremes still come from
every value. Binning costs several passes, the sample only touches ``1/s`` of the values.

Distributed use: gather the observers and ``merge`` them (counts at different exponents cannot be
summed elementwise).
"""

from __future__ import annotations

import torch
from torch import Tensor

from intq.observers.base import Observer

__all__ = [
    "MIN_EXPONENT",
    "HistogramObserver",
    "bin_counts",
    "fit_exponent",
    "rebin",
    "sample_stride",
]

MIN_EXPONENT = -100
"""Narrowest bin width, 2^-100: also the width used when every observed value is 0."""



def fit_exponent(lo: Tensor, hi: Tensor, bins: int) -> Tensor:
    """Smallest ``e >= MIN_EXPONENT`` with ``floor(hi/2^e) - floor(lo/2^e) <= bins - 1``, per entry.

    ``lo <= 0 <= hi`` in float64. The start ``floor(log2((hi - lo)/bins)) - 1`` never fits (the
    span is then >= 2·bins bins) unless clamped to ``MIN_EXPONENT``, so counting up from it finds
    the minimum; it takes at most a few steps.
    """
    start = torch.floor(torch.log2((hi - lo) / bins)) - 1
    exponent = start.clamp(min=MIN_EXPONENT).to(torch.int64)
    while True:
        spanned = torch.floor(torch.ldexp(hi, -exponent)) - torch.floor(torch.ldexp(lo, -exponent))
        too_wide = spanned > bins - 1
        if not too_wide.any():
            return exponent
        exponent = exponent + too_wide.to(torch.int64)


def rebin(
    counts: Tensor, exponent: Tensor, offset: Tensor, new_exponent: Tensor, new_offset: Tensor
) -> Tensor:
    """Counts (C, bins) moved exactly to a window with wider bins: bin k -> k >> (new - old e)."""
    bins = counts.shape[1]
    shift = (new_exponent - exponent).clamp(max=62)[:, None]
    assert bool((shift >= 0).all()), f"rebin can only widen bins, got shifts {shift.flatten()}"
    absolute = offset[:, None] + torch.arange(bins, device=counts.device)
    target = torch.bitwise_right_shift(absolute, shift) - new_offset[:, None]
    inside = (target >= 0) & (target < bins)
    assert bool((inside | (counts == 0)).all()), "rebin: occupied bins fall outside the new window"
    return torch.zeros_like(counts).scatter_add_(1, target.clamp(0, bins - 1), counts)


def bin_counts(rows: Tensor, exponent: Tensor, offset: Tensor, bins: int) -> Tensor:
    """Counts (C, bins) of ``rows`` (C, N): value x goes to bin ``floor(x/2^e) - offset``."""
    channels = rows.shape[0]
    index = _bin_index(rows, exponent[:, None], offset[:, None])
    if channels > 1:
        index += torch.arange(channels, device=rows.device)[:, None] * bins
    return torch.bincount(index.reshape(-1), minlength=channels * bins).reshape(channels, bins)


def _bin_index(values: Tensor, exponent: Tensor, offset: Tensor) -> Tensor:
    """``floor(x/2^e) - offset`` as int64 (exponent/offset broadcast against ``values``).

    ``torch.div(..., rounding_mode="floor")`` divides by the power of two exactly and floors
    correctly even when the quotient underflows (a tiny negative x lands in bin -1, not 0).
    """
    width = torch.pow(2.0, exponent.to(torch.float64)).to(torch.float32)
    index = torch.div(values, width, rounding_mode="floor")
    return index.sub_(offset.to(torch.float32)).to(torch.int64)


def sample_stride(n: int, sample_size: int | None) -> int:
    """1 if ``n <= sample_size`` (or no size), else ``ceil(n/sample_size)`` rounded up to odd."""
    if sample_size is None or n <= sample_size:
        return 1
    stride = -(-n // sample_size)
    return stride + 1 - stride % 2


class HistogramObserver(Observer):
    """Observer whose state is a canonical power-of-two histogram per channel (exact ``merge``).

    Subclasses read ``counts`` through ``bin_width``, ``bin_edges``, ``value_range``, ``quantile``.
    """

    def __init__(
        self,
        *,
        per_channel: bool,
        axis: int,
        bits: int,
        symmetric: bool,
        bins: int,
        magnitude: bool,
        sample_size: int | None = None,
    ) -> None:
        super().__init__(per_channel=per_channel, axis=axis, bits=bits, symmetric=symmetric)
        if sample_size is not None and (
            isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 1
        ):
            raise ValueError(
                f"{self.kind} observer: sample_size must be a positive int or None, "
                f"got {sample_size!r}"
            )
        if isinstance(bins, bool) or not isinstance(bins, int) or not 256 <= bins <= 65536:
            raise ValueError(
                f"{self.kind} observer: bins must be an int in [256, 65536], got {bins!r}"
            )
        self.bins = bins
        self.magnitude = magnitude
        self.sample_size = sample_size

    def _allocate(self, num_channels: int) -> None:
        super()._allocate(num_channels)
        device = self.num_batches.device
        shape = (num_channels,)
        self.register_buffer(
            "counts", torch.zeros((num_channels, self.bins), dtype=torch.int64, device=device)
        )
        self.register_buffer(
            "exponent", torch.full(shape, MIN_EXPONENT, dtype=torch.int64, device=device)
        )
        self.register_buffer("offset", torch.zeros(shape, dtype=torch.int64, device=device))

    def sample_stride(self, n: int) -> int:
        return sample_stride(n, self.sample_size)

    def _update(self, sample: Tensor, batch_min: Tensor, batch_max: Tensor, stride: int) -> None:
        exponent, offset = self._widen_to(batch_min, batch_max)
        values = sample.abs() if self.magnitude else sample
        self.counts += stride * bin_counts(values, exponent, offset, self.bins)

    def _merge(self, other: Observer) -> None:
        assert isinstance(other, HistogramObserver)
        exponent, offset = self._widen_to(other.min_val, other.max_val)
        self.counts += rebin(other.counts, other.exponent, other.offset, exponent, offset)

    def _widen_to(self, min_val: Tensor, max_val: Tensor) -> tuple[Tensor, Tensor]:
        """Grow the observed range to include [min_val, max_val] and move counts to its window."""
        self._extend_range(min_val, max_val)
        lo, hi = self._span()
        exponent = fit_exponent(lo, hi, self.bins)
        offset = torch.floor(torch.ldexp(lo, -exponent)).to(torch.int64)
        self.counts = rebin(self.counts, self.exponent, self.offset, exponent, offset)
        self.exponent, self.offset = exponent, offset
        return exponent, offset

    def value_range(self) -> tuple[Tensor, Tensor]:
        """Bounds of the histogrammed values, float64 (C,): ``(0, max|x|)`` or ``(min, max)``."""
        lo, hi = self.min_val.double(), self.max_val.double()
        if self.magnitude:
            return torch.zeros_like(lo), torch.maximum(-lo, hi)
        return lo, hi

    def _span(self) -> tuple[Tensor, Tensor]:
        """``value_range()`` relaxed to contain 0."""
        lo, hi = self.value_range()
        return lo.clamp(max=0), hi.clamp(min=0)

    def bin_width(self) -> Tensor:
        """Bin width ``2^e`` per channel, float64 (C,)."""
        return torch.pow(2.0, self.exponent.to(torch.float64))

    def bin_edges(self) -> Tensor:
        """Edges ``(offset + j)·2^e``, j = 0..bins, float64 (C, bins + 1); bin j is [e_j, e_j+1)."""
        j = torch.arange(self.bins + 1, device=self.counts.device, dtype=torch.float64)
        return (self.offset.to(torch.float64)[:, None] + j) * self.bin_width()[:, None]

    def quantile(self, q: float) -> Tensor:
        """Value at fraction ``q`` of the histogrammed values per channel (numpy 'linear' ranks).

        Rank ``q·(n - 1)`` is located in its bin and placed by spreading that bin's ``count``
        values evenly (value ``r`` of the bin at fraction ``(r + 0.5)/count``); the result is
        clipped to the exact observed extremes. It is within one bin width of the exact
        percentile wherever neighbouring values are less than a bin apart.
        """
        cum = self.counts.cumsum(1)
        rank = q * (cum[:, -1] - 1).to(torch.float64)
        index = torch.searchsorted(cum, rank.floor().to(torch.int64)[:, None], right=True)
        count = self.counts.gather(1, index).squeeze(1).to(torch.float64)
        before = cum.gather(1, index).squeeze(1).to(torch.float64) - count
        fraction = ((rank - before + 0.5) / count).clamp(0.0, 1.0)
        value = (self.offset.to(torch.float64) + index.squeeze(1) + fraction) * self.bin_width()
        lo, hi = self.value_range()
        return torch.minimum(torch.maximum(value, lo), hi)

    def _config(self) -> dict[str, object]:
        return {**super()._config(), "bins": self.bins, "sample_size": self.sample_size}
