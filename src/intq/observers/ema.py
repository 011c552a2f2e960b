"""EMA observer: bias-corrected exponential moving average of batch min/max (activations in QAT).

After ``t`` batches with minima ``b_1..b_t`` and decay ``d``::

    min_val_t = sum_i (1 - d)·d^(t-i)·b_i / (1 - d^t)

(likewise for max). This is the paper's moving average (TF used d = 0.999) with Adam-style bias
correction: a zero-started average divided by the weight it has accumulated. It is kept in the
equivalent recursive form ``m_t = m_(t-1) + a_t·(b_t - m_(t-1))``, ``a_t = (1 - d)/(1 - d^t)``;
``a_1 = 1``, so the first batch sets the range exactly (a warm start), and early batches are
weighted evenly instead of the first one dominating for ~1/(1 - d) steps. State is float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from intq.observers.base import Observer

__all__ = ["EMAObserver"]


class EMAObserver(Observer):
    """Bias-corrected EMA of per-batch ``(min, max)``, per tensor or per channel.

    ``merge`` is a count-weighted average of the two estimates,
    ``m = (t_a·m_a + t_b·m_b)/(t_a + t_b)``, keeping ``num_batches = max(t_a, t_b)``. It is not
    exact: an EMA of batch minima over the union of two data streams needs ``min(b_a, b_b)`` per
    step, which the two averages no longer contain. It is what keeps distributed QAT ranks in
    sync: for ranks in lockstep (equal ``num_batches``) it equals a ``torch.distributed``
    all-reduce AVG of ``min_val``/``max_val``.
    """

    kind = "ema"
    _state_dtype = torch.float64

    def __init__(
        self,
        *,
        per_channel: bool = False,
        axis: int = 0,
        bits: int = 8,
        symmetric: bool = False,
        decay: float = 0.999,
    ) -> None:
        super().__init__(per_channel=per_channel, axis=axis, bits=bits, symmetric=symmetric)
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0 < decay < 1:
            raise ValueError(f"ema observer: decay must be a number in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self.reset()

    def sample_stride(self, n: int) -> int:
        return 0

    def _update(
        self, sample: Tensor | None, batch_min: Tensor, batch_max: Tensor, stride: int
    ) -> None:
        done = int(self.num_batches)
        if done == 0:
            self.min_val = batch_min.to(torch.float64, copy=True)
            self.max_val = batch_max.to(torch.float64, copy=True)
            return
        if self.min_val.numel() == 1:  # per tensor: the same float64 arithmetic on Python floats
            self._fold_floats(batch_min.item(), batch_max.item(), done)
            return
        weight = self._weight(done)
        for state, batch in ((self.min_val, batch_min), (self.max_val, batch_max)):
            state.add_(weight * (batch.double() - state))

    def _fold_extremes(self, low: float, high: float, replace: bool) -> bool:
        if replace:
            return False
        self._fold_floats(low, high, self.num_batches.item())
        return True

    def _fold_floats(self, low: float, high: float, done: int) -> None:
        """One step of the per-tensor average after ``done`` batches, in Python floats."""
        weight = self._weight(done)
        for state, batch in ((self.min_val, low), (self.max_val, high)):
            value = state.item()
            state.fill_(value + weight * (batch - value))

    def _weight(self, done: int) -> float:
        """a_t = (1 - d)/(1 - d^t) for batch t = done + 1."""
        return (1.0 - self.decay) / (1.0 - self.decay ** (done + 1))

    def _ranges(self) -> tuple[Tensor, Tensor]:
        return self.min_val, self.max_val

    def _merge(self, other: Observer) -> None:
        mine, theirs = float(self.num_batches), float(other.num_batches)
        total = mine + theirs
        self.min_val = (mine * self.min_val + theirs * other.min_val) / total
        self.max_val = (mine * self.max_val + theirs * other.max_val) / total

    def _merged_num_batches(self, other: Observer) -> int:
        return int(torch.maximum(self.num_batches, other.num_batches))

    def _config(self) -> dict[str, object]:
        return {**super()._config(), "decay": self.decay}
