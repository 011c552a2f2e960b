"""Min/max observer: the running extremes of everything observed (exact, exactly mergeable)."""

from __future__ import annotations

from torch import Tensor

from intq.observers.base import Observer

__all__ = ["MinMaxObserver"]


class MinMaxObserver(Observer):
    """``ranges() = (min x, max x)`` over all observed values, per tensor or per channel.

    ``bits`` and ``symmetric`` do not change the estimate (a symmetric quantizer takes
    ``max(|min|, |max|)`` downstream). Merge is exact: min of minima, max of maxima, which is also
    what a ``torch.distributed`` all-reduce with MIN / MAX on ``min_val`` / ``max_val`` computes.
    """

    kind = "minmax"

    def __init__(
        self, *, per_channel: bool = False, axis: int = 0, bits: int = 8, symmetric: bool = False
    ) -> None:
        super().__init__(per_channel=per_channel, axis=axis, bits=bits, symmetric=symmetric)
        self.reset()

    def sample_stride(self, n: int) -> int:
        return 0

    def _update(
        self, sample: Tensor | None, batch_min: Tensor, batch_max: Tensor, stride: int
    ) -> None:
        self._extend_range(batch_min, batch_max)

    def _fold_extremes(self, low: float, high: float, replace: bool) -> bool:
        if not replace:
            low, high = min(self.min_val.item(), low), max(self.max_val.item(), high)
        self.min_val.fill_(low)
        self.max_val.fill_(high)
        return True

    def _replaced_in_place(self, batch_min: Tensor, batch_max: Tensor) -> bool:
        batches = self.num_batches.item()
        if batches == 0 or batch_min.shape != self.min_val.shape:
            return False
        self.min_val.copy_(batch_min)
        self.max_val.copy_(batch_max)
        if batches != 1:
            self.num_batches.fill_(1)
        return True

    def _ranges(self) -> tuple[Tensor, Tensor]:
        return self.min_val, self.max_val

    def _merge(self, other: Observer) -> None:
        self._extend_range(other.min_val, other.max_val)
