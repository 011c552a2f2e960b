"""Quantizer: one tensor's simulated quantization = QuantSpec + observer + three switches.

forward(x):
  1. observe (and not frozen): the observer sees x; the qparams become stale.
  2. fake_quant: stale qparams are recomputed from observer.ranges() (unless frozen), then
     x̂ = fake_quantize_ste(x, scale, zero_point) is returned; otherwise x itself. Float32 x
     with half-even rounding takes fake_quantize_half_even_clamped_ste (same values and
     gradient in fewer passes over x).
frozen: ranges are fixed: the observer is not updated and scale/zero_point are not recomputed.
learn_scale(): the frozen scale s becomes trainable as s·exp(g), g a parameter (zero at first)
that gets the learned-step-size gradient (LSQ, ``intq.fakequant.lsq``); bake_scale() writes
s·exp(g) back into the scale buffer and drops g.
input_clamp = (a, b): the quantizer takes over the clamp of a ReLU (0, inf) or ReLU6 (0, 6)
before it (a QAT fusion) and computes forward(hardtanh(x, a, b)): the observer gets the
clamped extremes of x, and the clamped form fuses the two clamps, so the activation costs no
pass of its own, forward or backward.

A per-tensor intq observer that needs only extremes (EMA, min/max: QAT's activations) gets
them as Python floats (Observer.update_extremes) and the qparams are computed in Python
floats (qparams_from_floats): QAT runs this for every quantizer at every step.

Qparams are computed lazily (at the first fake-quantized forward after new data, at
calculate_qparams() or at state_dict()), so an expensive observer (KL, MSE) searches once per
calibration, not once per batch. Buffers scale, zero_point, min_val, max_val (the range the
qparams come from) and the three switches are in state_dict, which therefore round-trips exactly;
before any data the qparam buffers are empty and load_state_dict resizes them.
"""

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from intq.fakequant.lsq import fake_quantize_lsq
from intq.fakequant.spec import QuantSpec
from intq.fakequant.ste import (
    MAX_CLAMPED_GRID_OFFSET,
    check_input_clamp,
    fake_quantize_half_even_clamped_ste,
    fake_quantize_ste,
    param_shape,
)
from intq.observers.base import Observer
from intq.qmath import (
    affine_qparams,
    qparams_from_floats,
    symmetric_qparams,
    symmetric_qparams_torch,
)
from intq.qmath._checks import check_finite, check_qparams

__all__ = ["Quantizer", "make_observer"]

_QPARAM_BUFFERS = ("scale", "zero_point", "min_val", "max_val")


def _rejects_nonfinite(observer: nn.Module) -> bool:
    """True when ``observer.update(x)`` raises for NaN/Inf in x (intq's Observer.update checks
    the extremes it takes, which NaN and Inf reach), so x needs no second check."""
    return type(observer).update is Observer.update


@dataclasses.dataclass
class _Flags:
    """The switches as Python bools (read on every forward; the *_enabled buffers mirror them
    for state_dict) and whether the qparams are stale (new data since they were computed)."""

    observe: bool
    fake_quant: bool
    frozen: bool
    stale: bool


def _clamp_float(value: float, low: float, high: float) -> float:
    """min(max(value, low), high), NaN staying NaN (as torch.clamp)."""
    return value if math.isnan(value) else min(max(value, low), high)


def _check_finite_clamped(x: torch.Tensor, clamp: tuple[float, float] | None) -> None:
    """check_finite of x, or of hardtanh(x, *clamp) (computed only if x is not finite:
    the clamp bounds ±inf)."""
    if clamp is not None and not bool(torch.isfinite(x.sum())):
        x = F.hardtanh(x, *clamp)
    check_finite(x, "x", "fake_quantize")


def make_observer(spec: QuantSpec) -> nn.Module:
    """A fresh observer for `spec`, built by intq.observers.make_observer (imported lazily)."""
    from intq.observers import make_observer as make

    return make(spec.observer, per_channel=spec.per_channel, axis=spec.axis, bits=spec.bits,
                symmetric=spec.symmetric, **spec.options)


class Quantizer(nn.Module):
    """Fake-quantizes one tensor per its QuantSpec with ranges from an observer.

    `observer` defaults to make_observer(spec); any module with update(x), ranges(), reset(),
    merge(other) and buffers works. With `current_ranges=True` the observer is reset before
    each update, so the ranges are those of the latest tensor (the paper's QAT weight ranges:
    the current min/max of the weights). With `observe_in_eval=False` the observer only sees
    tensors in training mode (QAT: evaluating mid-training must not move the ranges).
    `generator` seeds stochastic rounding. `input_clamp` (see the module docstring) makes
    forward(x) = forward(F.hardtanh(x, *input_clamp)).
    """

    def __init__(self, spec: QuantSpec, observer: nn.Module | None = None, *,
                 observe: bool = True, fake_quant: bool = True, current_ranges: bool = False,
                 observe_in_eval: bool = True, generator: torch.Generator | None = None,
                 input_clamp: tuple[float, float] | None = None) -> None:
        super().__init__()
        if not isinstance(spec, QuantSpec):
            raise ValueError(f"Quantizer: spec must be a QuantSpec, got {type(spec).__name__}")
        self.spec = spec
        self.observer = make_observer(spec) if observer is None else observer
        self.current_ranges = current_ranges
        self.observe_in_eval = observe_in_eval
        self.generator = generator
        self.input_clamp = input_clamp
        self.register_buffer("scale", torch.ones(0))
        self.register_buffer("zero_point", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("min_val", torch.zeros(0))
        self.register_buffer("max_val", torch.zeros(0))
        self.register_buffer("observe_enabled", torch.tensor(bool(observe)))
        self.register_buffer("fake_quant_enabled", torch.tensor(bool(fake_quant)))
        self.register_buffer("frozen_enabled", torch.tensor(False))
        self._flags = _Flags(bool(observe), bool(fake_quant), False, False)

    # ---------------------------------------------------------------------------- switches
    @property
    def observe(self) -> bool:
        """Update the observer on forward (ignored while frozen)."""
        return self._flags.observe

    @observe.setter
    def observe(self, value: bool) -> None:
        self._flags.observe = bool(value)
        self.observe_enabled.fill_(bool(value))

    @property
    def fake_quant(self) -> bool:
        """Return fake-quantized x from forward (else x unchanged)."""
        return self._flags.fake_quant

    @fake_quant.setter
    def fake_quant(self, value: bool) -> None:
        self._flags.fake_quant = bool(value)
        self.fake_quant_enabled.fill_(bool(value))

    @property
    def frozen(self) -> bool:
        """Ranges fixed: no observer updates, scale/zero_point never recomputed.

        Freezing first computes the qparams of data observed since the last computation.
        """
        return self._flags.frozen

    @frozen.setter
    def frozen(self, value: bool) -> None:
        if value and self._flags.stale:  # freeze the ranges observed so far, not stale qparams
            self.calculate_qparams()
        self._flags.frozen = bool(value)
        self.frozen_enabled.fill_(bool(value))

    @property
    def input_clamp(self) -> tuple[float, float] | None:
        """(a, b): forward(x) computes forward(F.hardtanh(x, a, b)) in fewer passes; or None."""
        return self._input_clamp

    @input_clamp.setter
    def input_clamp(self, value: tuple[float, float] | None) -> None:
        self._input_clamp = check_input_clamp(value)

    @property
    def has_qparams(self) -> bool:
        """True once scale/zero_point were computed (or loaded)."""
        return self.scale.numel() > 0

    # ------------------------------------------------------------------------------ compute
    @property
    def observing(self) -> bool:
        """True when a forward call feeds the observer (observe on, not frozen, and training
        or ``observe_in_eval``)."""
        flags = self._flags
        return flags.observe and not flags.frozen and (self.training or self.observe_in_eval)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clamp = self._input_clamp
        observed = self.observing
        extremes = observed and self._observes_extremes(x)
        if clamp is not None and observed and not extremes:  # the observer needs the values
            x, clamp = F.hardtanh(x, *clamp), None
        if observed:
            self._observe(x, clamp, extremes)
        if not self.fake_quant:
            return x if clamp is None else F.hardtanh(x, *clamp)
        frozen = self.frozen
        fresh = self._flags.stale and not frozen
        grid = self._update_qparams() if fresh else None
        if not self.has_qparams:
            state = "is frozen without qparams" if frozen else "has observed no data yet"
            raise ValueError(f"Quantizer({self.spec.describe()}): fake_quant is on but it {state}; "
                             "observe calibration data first (observe=True) or load a state_dict")
        spec = self.spec
        if "scale_log_gain" in self._parameters:
            if clamp is not None:
                x = F.hardtanh(x, *clamp)
            return fake_quantize_lsq(x, self.effective_scale, self.zero_point, spec.qmin,
                                     spec.qmax, spec.axis if spec.per_channel else None)
        if self._clamped_form_applies(x, grid is not None):
            if not (observed and (extremes or _rejects_nonfinite(self.observer))):
                _check_finite_clamped(x, clamp)
            if not fresh:  # loaded or set from outside since calculate_qparams
                check_qparams(self.scale, self.zero_point, spec.qmin, spec.qmax, "fake_quantize")
            grid = grid or self._clamped_grid(x, fresh)
            return fake_quantize_half_even_clamped_ste(x, *grid, clamp)
        if clamp is not None:
            x = F.hardtanh(x, *clamp)
        axis = spec.axis if spec.per_channel else None
        return fake_quantize_ste(x, self.scale, self.zero_point, spec.qmin, spec.qmax, axis,
                                 spec.rounding,
                                 self.generator if spec.rounding == "stochastic" else None)

    def _observes_extremes(self, x: torch.Tensor) -> bool:
        """The observer needs only the min and max of x (a per-tensor intq Observer asking
        for no sample): they reach it as Python floats (``Observer.update_extremes``), and an
        input clamp can stay fused (the extremes of the clamped x are the clamped extremes)."""
        observer = self.observer
        return (not self.spec.per_channel and isinstance(observer, Observer)
                and x.is_floating_point() and observer.sample_stride(x.numel()) == 0)

    def _clamped_form_applies(self, x: torch.Tensor, fresh_grid: bool) -> bool:
        """Half-even float32 fake quantization that fake_quantize_half_even_clamped_ste
        computes exactly (grids of 16 bits and less); ``fresh_grid``: the qparams were just
        computed per tensor (float32, one value)."""
        spec = self.spec
        if spec.rounding != "half_even" or x.dtype != torch.float32:
            return False
        if spec.qmax - spec.qmin >= MAX_CLAMPED_GRID_OFFSET:
            return False
        if fresh_grid:
            return True
        if self.scale.dtype != torch.float32:
            return False
        if not spec.per_channel:
            return self.scale.numel() == 1
        return -x.dim() <= spec.axis < x.dim() and x.shape[spec.axis] == self.scale.numel()

    def _clamped_grid(self, x: torch.Tensor, fresh: bool):
        """(scale, lo, hi) with [lo, hi] = nudged_range: Python floats per tensor (float32
        values: the float64 product of a float32 scale and an integer below 2^24 is exact, so
        rounding it to float32 is nudged_range's float32 product), else tensors along the axis
        (``fresh`` symmetric qparams: the zero point is the grid midpoint, a float constant)."""
        spec = self.spec
        qmin, qmax = spec.qmin, spec.qmax
        if not spec.per_channel:
            return self._grid_floats(self.scale.item(), int(self.zero_point.item()))
        scale = self.scale.reshape(param_shape(x.dim(), spec.axis))
        if fresh and spec.symmetric:
            mid = (qmin + qmax + 1) // 2
            return scale, scale * float(qmin - mid), scale * float(qmax - mid)
        zero_point = self.zero_point.reshape(scale.shape).to(torch.float32)
        return scale, (qmin - zero_point) * scale, (qmax - zero_point) * scale

    @torch.no_grad()
    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero_point) from the observer's ranges, stored in the buffers.

        While frozen, the stored buffers are returned unchanged.
        """
        if self.frozen and self.has_qparams:
            return self.scale, self.zero_point
        if self.frozen:
            raise ValueError(f"Quantizer({self.spec.describe()}): frozen without qparams; "
                             "unfreeze and observe data, or load a state_dict")
        self._update_qparams()
        return self.scale, self.zero_point

    def _update_qparams(self) -> tuple[float, float, float] | None:
        """Recompute the qparam buffers from the observer's ranges. Per tensor (an intq
        Observer, a range qparams_from_floats takes) in Python floats, returning the clamped
        form's grid (scale, lo, hi) too; else None."""
        spec = self.spec
        if not spec.per_channel and isinstance(self.observer, Observer):
            lo, hi = self.observer.range_floats()
            qparams = qparams_from_floats(lo, hi, spec.qmin, spec.qmax, spec.symmetric)
            if qparams is not None:
                scale, zero_point = qparams
                self._fill_qparams(scale, zero_point, lo, hi)
                return self._grid_floats(scale, zero_point)
        lo, hi = self.observer.ranges()
        qparams = (symmetric_qparams_torch(lo, hi, spec.qmin, spec.qmax)
                   if spec.symmetric and lo.ndim == 1 else None)
        if qparams is None:
            qparams = (symmetric_qparams if spec.symmetric else affine_qparams)(
                lo, hi, spec.qmin, spec.qmax)
        device = self.scale.device
        tensors = (*qparams, lo.to(torch.float32), hi.to(torch.float32))
        self._set_qparams(*(t if t.device == device else t.to(device) for t in tensors))
        return None

    def _fill_qparams(self, scale: float, zero_point: int, min_val: float, max_val: float
                      ) -> None:
        """Per-tensor qparams into the buffers, in place once they are 0-d (a fill costs a
        fraction of a new tensor; calculate_qparams returns the buffers themselves)."""
        values = (scale, zero_point, min_val, max_val)
        buffers = [self._buffers[name] for name in _QPARAM_BUFFERS]
        if all(buffer.dim() == 0 for buffer in buffers):
            for buffer, value in zip(buffers, values, strict=True):
                buffer.fill_(value)
            self._flags.stale = False
            return
        device = self.scale.device
        self._set_qparams(*(torch.tensor(value, dtype=buffer.dtype, device=device)
                            for buffer, value in zip(buffers, values, strict=True)))

    def _set_qparams(self, scale, zero_point, min_val, max_val) -> None:
        buffers = self._buffers  # plain replacement; nn.Module.__setattr__ costs ~10x more
        buffers["scale"], buffers["zero_point"] = scale, zero_point
        buffers["min_val"], buffers["max_val"] = min_val, max_val
        self._flags.stale = False

    def _grid_floats(self, scale: float, zero_point: int) -> tuple[float, float, float]:
        """(scale, lo, hi), [lo, hi] = nudged_range, in Python floats (see _clamped_grid)."""
        qmin, qmax = self.spec.qmin, self.spec.qmax
        return (scale, float(np.float32((qmin - zero_point) * scale)),
                float(np.float32((qmax - zero_point) * scale)))

    def merge(self, other: "Quantizer") -> None:
        """Fold another quantizer's observations (same spec) into this one, e.g. from calibration
        split across processes or batches; the qparams are recomputed when next needed."""
        if not isinstance(other, Quantizer) or other.spec != self.spec:
            raise ValueError(f"Quantizer({self.spec.describe()}): can only merge a Quantizer with "
                             f"the same spec, got {getattr(other, 'spec', type(other).__name__)}")
        self.observer.merge(other.observer)
        self._flags.stale = True

    def _observe(self, x: torch.Tensor, clamp: tuple[float, float] | None,
                 extremes: bool) -> None:
        """Feed the observer x; with ``extremes`` (see _observes_extremes) as its min and max,
        clamped to ``clamp`` (the observer then sees hardtanh(x, *clamp))."""
        if x.numel() == 0:
            raise ValueError(f"Quantizer({self.spec.describe()}): cannot observe an empty tensor "
                             f"of shape {tuple(x.shape)}")
        if extremes:
            low, high = (v.item() for v in torch.aminmax(x.detach()))
            if clamp is not None:
                low, high = _clamp_float(low, *clamp), _clamp_float(high, *clamp)
            self.observer.update_extremes(low, high, replace=self.current_ranges)
        elif self.current_ranges:
            self.observer.replace(x.detach())
        else:
            self.observer.update(x.detach())
        self._flags.stale = True

    def observe_summary(
        self, batch_min: torch.Tensor, batch_max: torch.Tensor, sample: torch.Tensor | None,
        stride: int,
    ) -> None:
        """What ``forward`` does to the observer, from a batch's summary computed elsewhere
        (``Observer.update_summary``: extremes, and every stride-th value if it asks for
        them); a no-op unless ``observing``."""
        if not self.observing:
            return
        if self.current_ranges:
            self.observer.reset()
        self.observer.update_summary(batch_min, batch_max, sample, stride)
        self._flags.stale = True

    # ------------------------------------------------------------------ learned step size
    def learn_scale(self) -> None:
        """Train the frozen scale (see the module docstring); half-even rounding only."""
        if not (self.frozen and self.has_qparams) or self.spec.rounding != "half_even":
            raise ValueError(f"Quantizer({self.spec.describe()}): only a frozen, calibrated "
                             "quantizer with half-even rounding can learn its scale")
        self.scale_log_gain = nn.Parameter(torch.zeros_like(self.scale))

    @property
    def effective_scale(self) -> torch.Tensor:
        """The scale forward uses: s·exp(g) while learning it, else the scale buffer."""
        gain = self._parameters.get("scale_log_gain")
        return self.scale if gain is None else self.scale * gain.exp()

    @torch.no_grad()
    def bake_scale(self) -> None:
        """scale := s·exp(g) and stop learning it (no-op when not learning)."""
        gain = self._parameters.pop("scale_log_gain", None)
        if gain is not None:
            self.scale = (self.scale * gain.exp()).to(self.scale.dtype)

    # ---------------------------------------------------------------------------- state
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        if self._flags.stale and not self.frozen:
            self.calculate_qparams()
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Resize the qparam buffers to the incoming shapes (per channel: C unknown until data)."""
        for name in _QPARAM_BUFFERS:
            incoming = state_dict.get(prefix + name)
            if isinstance(incoming, torch.Tensor):
                buffer = self._buffers[name]
                self._buffers[name] = buffer.new_empty(incoming.shape)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._flags = _Flags(bool(self.observe_enabled), bool(self.fake_quant_enabled),
                             bool(self.frozen_enabled), False)

    def extra_repr(self) -> str:
        switches = f"observe={self.observe}, fake_quant={self.fake_quant}, frozen={self.frozen}"
        if self._input_clamp is not None:
            switches += f", input_clamp={self._input_clamp}"
        if not self.has_qparams:
            qparams = "no qparams"
        elif self.scale.numel() == 1:
            qparams = f"scale={self.scale.item():.6g}, zero_point={self.zero_point.item()}"
        else:
            qparams = f"{self.scale.numel()} channel scales"
        return f"{self.spec.describe()}, {switches}, {qparams}"
