"""Observer base class: interface, input checks and state handling shared by all range estimators.

An observer watches tensors (``update``) and estimates the real range ``(min_val, max_val)`` that a
quantizer should cover (``ranges``). State lives in buffers so that ``state_dict()`` round-trips and
``torch.distributed`` can reduce it. With ``per_channel=True`` every statistic is kept per slice
along ``axis`` (any axis, negative allowed) and ``ranges()`` returns 1-D tensors; otherwise 0-d.
Observers see data as float32; integer tensors are rejected.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Observer"]

_NONFINITE_SUMMARY = "calibration tensor contains NaN or Inf values; check the model inputs"


class Observer(nn.Module, abc.ABC):
    """Range estimator: ``update(x)``, ``ranges() -> (min_val, max_val)``, ``merge``, ``reset``.

    Subclasses implement ``_update`` (fold one batch in), ``_ranges`` (per-channel estimate) and
    ``_merge`` (fold another observer's state in), extend ``_allocate`` with their own buffers, and
    end ``__init__`` with ``self.reset()``. Buffers ``min_val``/``max_val`` (one value per channel)
    and ``num_batches`` (number of ``update`` calls folded in) exist in every observer.
    """

    kind: str = "base"
    _state_dtype: torch.dtype = torch.float32

    def __init__(
        self, *, per_channel: bool = False, axis: int = 0, bits: int = 8, symmetric: bool = False
    ) -> None:
        super().__init__()
        if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"{self.kind} observer: bits must be an int in [2, 16], got {bits!r}")
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"{self.kind} observer: axis must be an int, got {axis!r}")
        self.per_channel = bool(per_channel)
        self.axis = axis
        self.bits = bits
        self.symmetric = bool(symmetric)
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.int64))

    # ----------------------------------------------------------------------------- public API
    @property
    def has_data(self) -> bool:
        """True once at least one tensor was observed (directly or through ``merge``)."""
        return self.num_batches.item() > 0

    @property
    def num_channels(self) -> int:
        """Channels tracked: 1 per-tensor, the size of ``axis`` per channel, 0 before any data."""
        return self.min_val.shape[0]

    def update(self, x: Tensor) -> None:
        """Fold one tensor into the statistics (detached, no autograd graph: everything is
        computed from ``x.detach()``, without a no_grad context's per-call cost)."""
        self._observe(x, replace=False)

    def replace(self, x: Tensor) -> None:
        """The statistics of ``x`` alone: ``reset()`` then ``update(x)`` (what a quantizer
        with current ranges does every step), in place where the kind allows."""
        self._observe(x, replace=True)

    def _observe(self, x: Tensor, replace: bool) -> None:
        rows = self._rows(x)
        batch_min, batch_max = _row_extremes(rows)
        if not _finite(batch_min, batch_max):
            raise ValueError(f"{self.kind} observer: {_nonfinite_message(rows)}")
        if replace and self._replaced_in_place(batch_min, batch_max):
            return
        if replace:
            self.reset()
        stride = self.sample_stride(rows.shape[1])
        sample = None if stride == 0 else rows if stride == 1 else rows[:, ::stride].contiguous()
        self._fold(batch_min, batch_max, sample, stride)

    def sample_stride(self, n: int) -> int:
        """Which of ``n`` values per channel ``update_summary`` needs: every s-th (1 = all of
        them), or none (0: the extremes are enough). All values unless a kind says otherwise."""
        return 1

    @torch.no_grad()
    def update_summary(
        self, batch_min: Tensor, batch_max: Tensor, sample: Tensor | None, stride: int
    ) -> None:
        """Fold one batch given by what ``update`` would extract from it: the per-channel
        extremes (C,) and, for ``stride = sample_stride(n) > 0``, every stride-th value of each
        channel's n values (C, M), each standing for ``stride`` values. For a runtime that
        computes these itself instead of handing over the whole tensor."""
        if not _finite(batch_min, batch_max):
            raise ValueError(f"{self.kind} observer: {_NONFINITE_SUMMARY}")
        if (stride == 0) != (sample is None):
            raise ValueError(f"{self.kind} observer: give a sample exactly when stride > 0")
        self._fold(batch_min.float(), batch_max.float(),
                   None if sample is None else sample.float(), stride)

    def update_extremes(self, low: float, high: float, *, replace: bool = False) -> None:
        """``update_summary`` of one batch, given by its min and max as Python floats (float32
        values), for a per-tensor observer of a kind that takes no sample (``sample_stride``
        0); after ``reset()`` if ``replace``. Kinds that can keep their state in Python floats
        here (QAT calls this every step) implement ``_fold_extremes``."""
        if self.per_channel:
            raise ValueError(f"{self.kind} observer: update_extremes is per tensor; use "
                             "update_summary")
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{self.kind} observer: {_NONFINITE_SUMMARY}")
        if self.has_data and self._fold_extremes(low, high, replace):
            if replace:
                self.num_batches.fill_(1)
            else:
                self.num_batches.add_(1)
            return
        if replace:
            self.reset()
        device = self.num_batches.device
        self._fold(torch.tensor([low], device=device), torch.tensor([high], device=device),
                   None, 0)

    def range_floats(self) -> tuple[float, float]:
        """``ranges()`` of a per-tensor observer as Python floats (float32 values)."""
        if self.per_channel:
            raise ValueError(f"{self.kind} observer: range_floats is per tensor; use ranges")
        if not self.has_data:
            raise ValueError(f"{self.kind} observer: no data observed; run calibration first")
        lo, hi = self._ranges()
        return float(np.float32(lo.item())), float(np.float32(hi.item()))

    def ranges(self) -> tuple[Tensor, Tensor]:
        """Estimated ``(min_val, max_val)``: float32, 0-d per-tensor, shape (C,) per channel."""
        if not self.has_data:
            raise ValueError(f"{self.kind} observer: no data observed; run calibration first")
        lo, hi = self._ranges()
        if not self.per_channel:
            lo, hi = lo.reshape(()), hi.reshape(())
        return lo.to(torch.float32, copy=True), hi.to(torch.float32, copy=True)

    def reset(self) -> None:
        """Forget everything observed; the observer is as freshly constructed."""
        self.num_batches.zero_()
        self._allocate(0)

    @torch.no_grad()
    def merge(self, other: Observer) -> None:
        """Fold ``other``'s statistics into this observer in place (see each kind for exactness)."""
        if type(other) is not type(self) or other._config() != self._config():
            raise ValueError(
                f"{self.kind} observer: can only merge an observer of the same kind and settings, "
                f"got {type(other).__name__} with {other._config()} (mine: {self._config()})"
            )
        if not other.has_data:
            return
        if not self.has_data:
            self.load_state_dict(other.state_dict())
            return
        if other.num_channels != self.num_channels:
            raise ValueError(
                f"{self.kind} observer: cannot merge {other.num_channels} channels into "
                f"{self.num_channels}"
            )
        merged_batches = self._merged_num_batches(other)
        self._merge(other)
        self.num_batches.fill_(merged_batches)

    def extra_repr(self) -> str:
        return ", ".join(f"{key}={value!r}" for key, value in self._config().items())

    def _fold(
        self, batch_min: Tensor, batch_max: Tensor, sample: Tensor | None, stride: int
    ) -> None:
        if not self.has_data:
            self._allocate(batch_min.shape[0])
        elif batch_min.shape[0] != self.num_channels:
            raise ValueError(
                f"{self.kind} observer: expected {self.num_channels} channels along axis "
                f"{self.axis} (from earlier updates), got {batch_min.shape[0]}"
            )
        self._update(sample, batch_min, batch_max, stride)
        self.num_batches.add_(1)

    # --------------------------------------------------------------------- subclass interface
    def _allocate(self, num_channels: int) -> None:
        """(Re)create the per-channel buffers for ``num_channels`` channels, holding no data."""
        device = self.num_batches.device
        full = torch.full((num_channels,), math.inf, dtype=self._state_dtype, device=device)
        self.register_buffer("min_val", full)
        self.register_buffer("max_val", -full)

    @abc.abstractmethod
    def _update(
        self, sample: Tensor | None, batch_min: Tensor, batch_max: Tensor, stride: int
    ) -> None:
        """Fold one batch into the state: its per-channel min and max (C,) and the (C, M) values
        ``sample_stride`` asked for, each standing for ``stride`` values (None if it asked for
        none)."""

    def _fold_extremes(self, low: float, high: float, replace: bool) -> bool:
        """Fold one batch's extremes into the per-tensor state in Python floats (the state
        has data; ``replace``: the batch alone) and return True; or return False (the default)
        and let ``update_extremes`` fold them as tensors. The count is updated by the caller."""
        return False

    def _replaced_in_place(self, batch_min: Tensor, batch_max: Tensor) -> bool:
        """Set the state to that of one batch with these extremes, reusing the buffers, and
        return True; or return False (the default) and let ``replace`` reset and update."""
        return False

    @abc.abstractmethod
    def _ranges(self) -> tuple[Tensor, Tensor]:
        """Per-channel estimate ``(lo, hi)``, each of shape (C,)."""

    @abc.abstractmethod
    def _merge(self, other: Observer) -> None:
        """Fold the state of ``other`` (same kind, settings and channel count) into this one."""

    def _extend_range(self, min_val: Tensor, max_val: Tensor) -> None:
        """``min_val``/``max_val`` := elementwise min / max with the given per-channel extremes."""
        self.min_val = torch.minimum(self.min_val, min_val)
        self.max_val = torch.maximum(self.max_val, max_val)

    def _merged_num_batches(self, other: Observer) -> int:
        return int(self.num_batches + other.num_batches)

    def _config(self) -> dict[str, Any]:
        """Constructor settings; two observers merge only if these are equal."""
        return {
            "per_channel": self.per_channel,
            "axis": self.axis,
            "bits": self.bits,
            "symmetric": self.symmetric,
        }

    # ---------------------------------------------------------------------------- internals
    def _rows(self, x: Tensor) -> Tensor:
        """``x`` as a float32 (channels, values) matrix: (1, numel) per-tensor."""
        if not isinstance(x, Tensor):
            raise ValueError(
                f"{self.kind} observer: expected a torch.Tensor, got {type(x).__name__}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{self.kind} observer: expected a floating-point tensor, got dtype {x.dtype}"
            )
        if x.numel() == 0:
            raise ValueError(
                f"{self.kind} observer: got an empty tensor of shape {tuple(x.shape)}; "
                "feed at least one value"
            )
        x = x.detach()
        if x.dtype != torch.float32:
            x = x.to(torch.float32)
        if not self.per_channel:
            return x.reshape(1, -1)
        axis, ndim = self.axis, x.dim()
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"{self.kind} observer: channel axis {axis} is out of range for a tensor of "
                f"shape {tuple(x.shape)}; use an axis in [{-ndim}, {ndim - 1}]"
            )
        if axis % ndim != 0:
            x = x.movedim(axis, 0)
        return x.reshape(x.shape[0], -1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Resize per-channel buffers to the incoming channel count before the copy."""
        for name, buffer in self._buffers.items():
            incoming = state_dict.get(prefix + name)
            if (
                buffer is not None
                and isinstance(incoming, Tensor)
                and buffer.dim() >= 1
                and incoming.dim() == buffer.dim()
                and incoming.shape[1:] == buffer.shape[1:]
            ):
                self._buffers[name] = buffer.new_empty(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def _row_extremes(rows: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row (min, max) of (C, N) ``rows``: one pass (``aminmax`` over everything) for a
    single row; amin/amax otherwise, as ``aminmax(dim=1)`` is ~100x slower on CPU (torch 2.13)."""
    if rows.shape[0] == 1:
        low, high = torch.aminmax(rows)
        return low.reshape(1), high.reshape(1)
    return rows.amin(dim=1), rows.amax(dim=1)


def _finite(batch_min: Tensor, batch_max: Tensor) -> bool:
    """No NaN or Inf among the extremes (so none in the batch): Python floats for one channel
    (QAT checks every step; tensor ops cost more there than the check)."""
    if batch_min.numel() == 1:
        return math.isfinite(batch_min.item()) and math.isfinite(batch_max.item())
    return bool(torch.isfinite(torch.cat((batch_min, batch_max))).all())


def _nonfinite_message(x: Tensor) -> str:
    """'calibration tensor contains 3 NaN and 1 Inf values; ...' for a non-finite tensor."""
    parts = []
    for label, count in (("NaN", int(torch.isnan(x).sum())), ("Inf", int(torch.isinf(x).sum()))):
        if count:
            parts.append(f"{count} {label}")
    return f"calibration tensor contains {' and '.join(parts)} values; check the model inputs"
