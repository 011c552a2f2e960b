"""Percentile observer: clip the range at a percentile of the observed values, from a histogram."""

from __future__ import annotations

from torch import Tensor

from intq.observers.histogram import HistogramObserver

__all__ = ["PercentileObserver"]


class PercentileObserver(HistogramObserver):
    """``ranges()`` at the ``percentile``-th percentile (default 99.99) of everything observed.

    Affine: a histogram of signed x, ``(P_(100-p)(x), P_p(x))``. Symmetric: a histogram of ``|x|``,
    ``t = P_p(|x|)``, ``(-t, t)``. Streaming, no stored samples: within one bin width of
    ``numpy.percentile`` (linear interpolation) where the data is dense, see
    ``HistogramObserver.quantile``. ``merge`` is exact (the histogram is canonical).
    """

    kind = "percentile"

    def __init__(
        self,
        *,
        per_channel: bool = False,
        axis: int = 0,
        bits: int = 8,
        symmetric: bool = False,
        percentile: float = 99.99,
        bins: int = 2048,
    ) -> None:
        super().__init__(
            per_channel=per_channel,
            axis=axis,
            bits=bits,
            symmetric=symmetric,
            bins=bins,
            magnitude=symmetric,
        )
        if isinstance(percentile, bool) or not isinstance(percentile, int | float):
            raise ValueError(
                f"percentile observer: percentile must be a number, got {percentile!r}"
            )
        if not 50 < percentile <= 100:
            raise ValueError(
                f"percentile observer: percentile must be in (50, 100], got {percentile!r}"
            )
        self.percentile = float(percentile)
        self.reset()

    def _ranges(self) -> tuple[Tensor, Tensor]:
        upper = self.quantile(self.percentile / 100.0)
        if self.symmetric:
            return -upper, upper
        return self.quantile(1.0 - self.percentile / 100.0), upper

    def _config(self) -> dict[str, object]:
        return {**super()._config(), "percentile": self.percentile}
