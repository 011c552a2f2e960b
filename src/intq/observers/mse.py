"""MSE observers: the clip range that minimizes the expected quantization MSE at the target grid.

``MSEObserver`` (activations) searches on a mergeable histogram of everything observed;
``TensorMSEObserver`` (weights) searches on the latest tensor itself. Both search clip ranges
``ratio·[lo, hi]`` of the observed range, ratio in [0.02, 1], and score them with the error of the
grid they would get (``bits``/``symmetric``; grid and search in ``_clip_search``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from intq.observers._clip_search import mse_on_histogram, mse_on_rows, search_clip_ratio
from intq.observers.base import Observer
from intq.observers.histogram import HistogramObserver

__all__ = ["DEFAULT_SAMPLE_SIZE", "MSEObserver", "TensorMSEObserver"]

DEFAULT_SAMPLE_SIZE = 2**18
"""Values per channel histogrammed per update (262,144). On EfficientNet-Lite0 (256 crops in
batches of 32) it gives the logit SQNR of histogramming every value (22.52 vs 22.51 dB; 2^17 lost
0.17 dB). On 4M synthetic values in 4 updates the chosen clip costs at most 1.4% more MSE,
except for heavy tails at 8 bits (Student t, 3 degrees of freedom: +1% to +17% by draw), where the
clip sits in a sparse tail; ``sample_size=None`` histograms every value."""


class MSEObserver(HistogramObserver):
    """Clip range minimizing the quantization MSE over everything observed, from a histogram.

    Symmetric: a histogram of ``|x|``, search ``t = ratio·max|x|``, ``ranges() = (-t, t)``.
    Affine: a histogram of signed x, search ``ratio·[min(x, 0), max(x, 0)]``. The MSE of a
    candidate is integrated in closed form assuming values spread uniformly within each bin.
    ``merge`` is exact (the histogram is canonical, see ``histogram``). Each update histograms
    at most ``sample_size`` evenly strided values per channel (``None``: all of them): the
    search needs the shape of the distribution, and the exact extremes are kept anyway.
    """

    kind = "mse"

    def __init__(
        self,
        *,
        per_channel: bool = False,
        axis: int = 0,
        bits: int = 8,
        symmetric: bool = False,
        bins: int = 2048,
        sample_size: int | None = DEFAULT_SAMPLE_SIZE,
    ) -> None:
        super().__init__(
            per_channel=per_channel,
            axis=axis,
            bits=bits,
            symmetric=symmetric,
            bins=bins,
            magnitude=symmetric,
            sample_size=sample_size,
        )
        self.reset()

    def _ranges(self) -> tuple[Tensor, Tensor]:
        lo, hi = self._span()
        edges = self.bin_edges()

        def loss(ratio: Tensor) -> Tensor:
            return mse_on_histogram(
                self.counts, edges, ratio * lo[:, None], ratio * hi[:, None], self.bits,
                self.symmetric,
            )

        ratio = search_clip_ratio(loss, self.num_channels, self.bins, self.counts.device)
        if self.symmetric:
            return -ratio * hi, ratio * hi
        return ratio * lo, ratio * hi


class TensorMSEObserver(Observer):
    """Clip range minimizing the quantization MSE of the latest tensor, searched on its values.

    Meant for weights, where the tensor is the whole population: each ``update`` replaces the
    estimate. Symmetric: ``t = ratio·max|w|``, ``ranges() = (-t, t)``; affine:
    ``ratio·[min(w, 0), max(w, 0)]``; per channel, vectorized over channels. ``merge`` keeps the
    envelope (min of the lows, max of the highs): idempotent, so ranks holding the same weights
    stay unchanged, and no value either observer kept in range gets clipped.
    """

    kind = "mse"

    def __init__(
        self, *, per_channel: bool = False, axis: int = 0, bits: int = 8, symmetric: bool = False
    ) -> None:
        super().__init__(per_channel=per_channel, axis=axis, bits=bits, symmetric=symmetric)
        self.reset()

    def _update(self, rows: Tensor, batch_min: Tensor, batch_max: Tensor, stride: int) -> None:
        lo, hi = batch_min.double().clamp(max=0), batch_max.double().clamp(min=0)
        if self.symmetric:
            hi = torch.maximum(-lo, hi)
            lo = -hi

        def loss(ratio: Tensor) -> Tensor:
            return mse_on_rows(rows, ratio * lo[:, None], ratio * hi[:, None], self.bits,
                               self.symmetric)

        ratio = search_clip_ratio(loss, rows.shape[0], rows.shape[1], rows.device)
        self.min_val = (ratio * lo).float()
        self.max_val = (ratio * hi).float()

    def _ranges(self) -> tuple[Tensor, Tensor]:
        return self.min_val, self.max_val

    def _merge(self, other: Observer) -> None:
        self._extend_range(other.min_val, other.max_val)
