"""Quantizer: one tensor's simulated quantization = QuantSpec + observer + three switches.

forward(x):
  1. observe (and not frozen): the observer sees x; the qparams become stale.
  2. fake_quant: stale qparams are recomputed from observer.ranges() (unless frozen), then
     x̂ = fake_quantize_ste(x, scale, zero_point) is returned; otherwise x itself. Float32 x
     with half-even rounding takes fake_quantize_half_even_clamped_ste (same values and
     gradient in fewer passes over x).
frozen: ranges are fixed: the observer is not updated and scale/zero_point are not recomputed.
input_clamp = (a, b): the quantizer takes over the clamp of a ReLU (0, inf) or ReLU6 (0, 6)
before it (a QAT fusion) and computes forward(hardtanh(x, a, b)): the observer gets the
clamped extremes of x, and the clamped form fuses the two clamps, so the activation costs no
pass of its own, forward or backward.

Qparams are computed lazily (at the first fake-quantized forward after new data, at
calculate_qparams() or at state_dict()), so an expensive observer (KL, MSE) searches once per
calibration, not once per batch. Buffers scale, zero_point, min_val, max_val (the range the
qparams come from) and the three switches are in state_dict, which therefore round-trips exactly;
before any data the qparam buffers are empty and load_state_dict resizes them.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from intq.fakequant.spec import QuantSpec
from intq.fakequant.ste import (
    MAX_CLAMPED_GRID_OFFSET,
    check_input_clamp,
    fake_quantize_half_even_clamped_ste,
    fake_quantize_ste,
    param_shape,
)
from intq.observers.base import Observer
from intq.qmath import affine_qparams, symmetric_qparams
from intq.qmath._checks import check_finite, check_qparams

__all__ = ["Quantizer", "make_observer"]

_QPARAM_BUFFERS = ("scale", "zero_point", "min_val", "max_val")


def _rejects_nonfinite(observer: nn.Module) -> bool:
    """True when ``observer.update(x)`` raises for NaN/Inf in x (intq's Observer.update checks
    the extremes it takes, which NaN and Inf reach), so x needs no second check."""
    return type(observer).update is Observer.update


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
        self._stale = False

    # ---------------------------------------------------------------------------- switches
    @property
    def observe(self) -> bool:
        """Update the observer on forward (ignored while frozen)."""
        return bool(self.observe_enabled)

    @observe.setter
    def observe(self, value: bool) -> None:
        self.observe_enabled.fill_(bool(value))

    @property
    def fake_quant(self) -> bool:
        """Return fake-quantized x from forward (else x unchanged)."""
        return bool(self.fake_quant_enabled)

    @fake_quant.setter
    def fake_quant(self, value: bool) -> None:
        self.fake_quant_enabled.fill_(bool(value))

    @property
    def frozen(self) -> bool:
        """Ranges fixed: no observer updates, scale/zero_point never recomputed.

        Freezing first computes the qparams of data observed since the last computation.
        """
        return bool(self.frozen_enabled)

    @frozen.setter
    def frozen(self, value: bool) -> None:
        if value and self._stale:  # freeze the ranges observed so far, not stale qparams
            self.calculate_qparams()
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
        return self.observe and not self.frozen and (self.training or self.observe_in_eval)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        clamp = self._input_clamp
        if clamp is not None and not self._takes_clamped_extremes(x):
            x, clamp = F.hardtanh(x, *clamp), None
        observed = self.observing
        if observed:
            self._observe(x, clamp)
        if not self.fake_quant:
            return x if clamp is None else F.hardtanh(x, *clamp)
        frozen = self.frozen
        fresh = self._stale and not frozen
        if fresh:
            self.calculate_qparams()
        if not self.has_qparams:
            state = "is frozen without qparams" if frozen else "has observed no data yet"
            raise ValueError(f"Quantizer({self.spec.describe()}): fake_quant is on but it {state}; "
                             "observe calibration data first (observe=True) or load a state_dict")
        spec = self.spec
        if self._clamped_form_applies(x):
            if not (observed and (clamp is not None or _rejects_nonfinite(self.observer))):
                _check_finite_clamped(x, clamp)
            if not fresh:  # loaded or set from outside since calculate_qparams
                check_qparams(self.scale, self.zero_point, spec.qmin, spec.qmax, "fake_quantize")
            return fake_quantize_half_even_clamped_ste(x, *self._clamped_grid(x), clamp)
        if clamp is not None:
            x = F.hardtanh(x, *clamp)
        axis = spec.axis if spec.per_channel else None
        return fake_quantize_ste(x, self.scale, self.zero_point, spec.qmin, spec.qmax, axis,
                                 spec.rounding,
                                 self.generator if spec.rounding == "stochastic" else None)

    def _takes_clamped_extremes(self, x: torch.Tensor) -> bool:
        """The input clamp can stay fused: the observer, if it sees x, needs only the extremes
        of the clamped x (a per-tensor intq Observer asking for no sample)."""
        if not self.observing:
            return True
        observer = self.observer
        return (not self.spec.per_channel and isinstance(observer, Observer)
                and observer.sample_stride(x.numel()) == 0)

    def _clamped_form_applies(self, x: torch.Tensor) -> bool:
        """Half-even float32 fake quantization that fake_quantize_half_even_clamped_ste
        computes exactly (grids of 16 bits and less)."""
        spec = self.spec
        if spec.rounding != "half_even" or x.dtype != torch.float32:
            return False
        if self.scale.dtype != torch.float32 or spec.qmax - spec.qmin >= MAX_CLAMPED_GRID_OFFSET:
            return False
        if not spec.per_channel:
            return self.scale.numel() == 1
        return -x.dim() <= spec.axis < x.dim() and x.shape[spec.axis] == self.scale.numel()

    def _clamped_grid(self, x: torch.Tensor):
        """(scale, lo, hi) with [lo, hi] = nudged_range: Python floats per tensor (float32
        values: the float64 product of a float32 scale and an integer below 2^24 is exact, so
        rounding it to float32 is nudged_range's float32 product), else tensors along the axis."""
        qmin, qmax = self.spec.qmin, self.spec.qmax
        if not self.spec.per_channel:
            scale, zero_point = self.scale.item(), int(self.zero_point.item())
            return (scale, float(np.float32((qmin - zero_point) * scale)),
                    float(np.float32((qmax - zero_point) * scale)))
        shape = param_shape(x.dim(), self.spec.axis)
        scale = self.scale.reshape(shape)
        zero_point = self.zero_point.reshape(shape).to(torch.float32)
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
        lo, hi = self.observer.ranges()
        qparams = symmetric_qparams if self.spec.symmetric else affine_qparams
        scale, zero_point = qparams(lo, hi, self.spec.qmin, self.spec.qmax)
        device = self.scale.device
        buffers = self._buffers  # plain replacement; nn.Module.__setattr__ costs ~10x more
        buffers["scale"], buffers["zero_point"] = scale.to(device), zero_point.to(device)
        buffers["min_val"] = lo.to(device, torch.float32)
        buffers["max_val"] = hi.to(device, torch.float32)
        self._stale = False
        return self.scale, self.zero_point

    def merge(self, other: "Quantizer") -> None:
        """Fold another quantizer's observations (same spec) into this one, e.g. from calibration
        split across processes or batches; the qparams are recomputed when next needed."""
        if not isinstance(other, Quantizer) or other.spec != self.spec:
            raise ValueError(f"Quantizer({self.spec.describe()}): can only merge a Quantizer with "
                             f"the same spec, got {getattr(other, 'spec', type(other).__name__)}")
        self.observer.merge(other.observer)
        self._stale = True

    def _observe(self, x: torch.Tensor, clamp: tuple[float, float] | None = None) -> None:
        """Feed the observer x, or hardtanh(x, *clamp) through its clamped extremes."""
        if x.numel() == 0:
            raise ValueError(f"Quantizer({self.spec.describe()}): cannot observe an empty tensor "
                             f"of shape {tuple(x.shape)}")
        if clamp is not None:
            extremes = torch.stack(torch.aminmax(x.detach())).clamp_(*clamp).float()
            self.observe_summary(extremes[:1], extremes[1:], None, 0)
            return
        if self.current_ranges:
            self.observer.replace(x.detach())
        else:
            self.observer.update(x.detach())
        self._stale = True

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
        self._stale = True

    # ---------------------------------------------------------------------------- state
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        if self._stale and not self.frozen:
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
        self._stale = False

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
