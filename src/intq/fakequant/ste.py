"""Fake quantization with the straight-through estimator (STE), one autograd Function per rounding.

Forward: intq.qmath.fake_quantize, x̂ = (clamp(round(x/Δ) + z, qmin, qmax) - z)·Δ.
Backward: ∂L/∂x = ∂L/∂x̂ · 1{lo <= x <= hi}, with [lo, hi] = nudged_range(Δ, z, qmin, qmax) the
dequantized grid ends: the gradient passes unchanged inside the range and is zero where x is
clipped (PAPER.md 2). Scale and zero point get no gradient here (see intq.fakequant.lsq).

fake_quantize_half_even_clamped_ste is the same half-even forward and gradient for float32 x
in the fewest passes over x (what a QAT step runs for every activation and weight): clamp x
to the grid ends with a native autograd op, then round and rescale in place outside autograd;
per tensor the backward is one pass over x and the gradient.
Given the clamp [a, b] of a ReLU/ReLU6 before it (``input_clamp``), it computes
fake_quantize_ste(hardtanh(x, a, b)) in the same passes: the two clamps are one.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

from intq.qmath import ROUNDINGS, fake_quantize, nudged_range

__all__ = [
    "FakeQuantizeHalfAwaySTE",
    "FakeQuantizeHalfEvenSTE",
    "FakeQuantizeStochasticSTE",
    "MAX_CLAMPED_GRID_OFFSET",
    "check_input_clamp",
    "fake_quantize_half_even_clamped_ste",
    "fake_quantize_ste",
]

MAX_CLAMPED_GRID_OFFSET = 2**22  # the clamped form is exact for |q - zero_point| below this
_ONE, _ZERO = torch.ones(1), torch.zeros(1)
_FLOAT32_INF, _FLOAT32_MINUS_INF = np.float32(np.inf), np.float32(-np.inf)


def param_shape(ndim: int, axis: int | None) -> list[int]:
    """Shape that broadcasts a 0-d/1-D quantization parameter along `axis` of an ndim tensor."""
    shape = [1] * ndim
    if axis is not None:
        shape[axis] = -1
    return shape


def inside_range(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int, axis: int | None):
    """Boolean mask of lo <= x <= hi, [lo, hi] the dequantized grid ends (nudged_range)."""
    shape = param_shape(x.dim(), axis)
    lo, hi = nudged_range(scale, zero_point, qmin, qmax)
    return (x >= lo.reshape(shape)) & (x <= hi.reshape(shape))


def _forward(ctx, x, scale, zero_point, qmin, qmax, axis, rounding, generator):
    out = fake_quantize(x, scale, zero_point, qmin, qmax, axis, rounding, generator)
    ctx.save_for_backward(inside_range(x, scale, zero_point, qmin, qmax, axis))
    return out


class _STE(torch.autograd.Function):
    """Shared backward: the incoming gradient masked to the inside of the grid range."""

    @staticmethod
    def backward(ctx, grad_output):
        (inside,) = ctx.saved_tensors
        return (grad_output * inside,) + (None,) * 6


class FakeQuantizeHalfEvenSTE(_STE):
    """fake_quantize with round half to even; STE backward."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis=None):
        return _forward(ctx, x, scale, zero_point, qmin, qmax, axis, "half_even", None)


class FakeQuantizeHalfAwaySTE(_STE):
    """fake_quantize with round half away from zero; STE backward."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis=None):
        return _forward(ctx, x, scale, zero_point, qmin, qmax, axis, "half_away", None)


class FakeQuantizeStochasticSTE(_STE):
    """fake_quantize with unbiased stochastic rounding (seeded `generator`); STE backward."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis=None, generator=None):
        return _forward(ctx, x, scale, zero_point, qmin, qmax, axis, "stochastic", generator)


def _rounded_to_grid_in_place(clipped: torch.Tensor, scale) -> torch.Tensor:
    """``clipped`` := round_half_even(clipped / scale)·scale, in place and outside autograd:
    the result keeps the gradient of the clamp that made it, which is the STE's."""
    clipped.detach().div_(scale).round_().mul_(scale)
    return clipped


def _open_range(lo: float, hi: float, input_clamp: tuple[float, float] | None = None
                ) -> tuple[float, float] | None:
    """(below, above) with ``below < x < above`` exactly when float32 x gets a gradient: lo <= x
    <= hi, and a < x < b for an input clamp (a, b) (hardtanh's gradient); below and above
    are the float32 neighbours of lo and hi outside [lo, hi], or a and b. None when a bound
    next to 0 is subnormal and the CPU flushes subnormals (torch.set_flush_denormal), which
    would drop x = 0 from the open range."""
    below = float(np.nextafter(np.float32(lo), _FLOAT32_MINUS_INF))
    above = float(np.nextafter(np.float32(hi), _FLOAT32_INF))
    zero_passes = True  # 0 is always in [lo, hi]
    if input_clamp is not None:
        below, above = max(below, input_clamp[0]), min(above, input_clamp[1])
        zero_passes = input_clamp[0] < 0.0 < input_clamp[1]
    if zero_passes and (lo == 0.0 or hi == 0.0) and not _subnormal_bounds_hold(below, above):
        return None
    return below, above


def _subnormal_bounds_hold(below: float, above: float) -> bool:
    """hardtanh_backward passes the gradient at 0 with these bounds (false when subnormals
    are flushed to zero)."""
    probe = torch.ops.aten.hardtanh_backward(_ONE, _ZERO, below, above)
    return bool(probe[0] == 1.0)


def check_input_clamp(input_clamp: tuple[float, float] | None) -> tuple[float, float] | None:
    """``input_clamp`` as (a, b) Python floats with a <= 0 <= b and a < b, a ReLU's
    ``(0, inf)`` or a ReLU6's ``(0, 6)``: a clamp whose range meets every grid's [lo, hi]
    (both hold 0), so that clamping to one and then the other is clamping to their
    intersection. None stays None."""
    if input_clamp is None:
        return None
    try:
        low, high = (float(end) for end in input_clamp)
    except (TypeError, ValueError):
        raise ValueError(f"input_clamp must be a pair of numbers (a, b), got {input_clamp!r}"
                         ) from None
    if not (low <= 0.0 <= high and low < high) or math.isnan(low) or math.isnan(high):
        raise ValueError(f"input_clamp (a, b) needs a <= 0 <= b and a < b (a ReLU's (0, inf), "
                         f"a ReLU6's (0, 6)), got {input_clamp!r}")
    return low, high


def fake_quantize_half_even_clamped_ste(x: torch.Tensor, scale, lo, hi,
                                        input_clamp: tuple[float, float] | None = None
                                        ) -> torch.Tensor:
    """fake_quantize_ste(x, scale, zero_point, qmin, qmax, axis, "half_even"), computed as
    x̂ = round_half_even(clamp(x, lo, hi) / scale)·scale, for float32 x without checks.

    `lo, hi = nudged_range(scale, zero_point, qmin, qmax)`; `scale`, `lo`, `hi` are float32
    values as Python floats (per tensor) or tensors broadcasting along the channel axis. The
    caller guarantees a finite x, a valid grid and |q - zero_point| < MAX_CLAMPED_GRID_OFFSET
    for q in (qmin, qmax). Then, with k = q - zero_point: fl(fl(k·Δ)/Δ) is within ~|k|·2^-23 < 1/2
    of k, so division and rounding (both monotone) map [lo, hi] onto [qmin - z, qmax - z], and
    clamping x before dividing equals clamping the integer after rounding; integers below 2^24
    are exact in float32, so adding and subtracting z cancel. Equal values (a zero may come out
    as -0.0) and the same gradient, 1{lo <= x <= hi}, as fake_quantize_ste.

    The gradient is that of the clamp, a native autograd op; the rounding happens in place
    outside autograd. Per tensor the clamp is ``hardtanh(x, lo⁻, hi⁺)``, lo⁻ and hi⁺ the
    float32 neighbours outside [lo, hi]: its backward (one ``hardtanh_backward`` pass over the
    saved x) passes the gradient where lo⁻ < x < hi⁺, which for float32 x is lo <= x <= hi,
    and lo⁻/Δ, hi⁺/Δ round to the same integers as lo/Δ, hi/Δ (they are within another
    |k|·2^-23 of k). Per channel it is ``torch.clamp`` with tensor bounds, whose gradient is
    1{lo <= x <= hi} as it stands.

    ``input_clamp = (a, b)`` (see check_input_clamp; ±inf in x is then allowed where the clamp
    bounds it) gives the values and gradient of this function applied to F.hardtanh(x, a, b):
    per tensor, x is clamped once, to [max(a, lo⁻), min(b, hi⁺)], and the gradient passes
    where max(a, lo⁻) < x < min(b, hi⁺); per channel, hardtanh comes first.

    >>> x = torch.tensor([-3.0, 0.3, 1.2], requires_grad=True)
    >>> fake_quantize_half_even_clamped_ste(x, 0.5, -2.0, 1.5).sum().backward()
    >>> x.grad
    tensor([0., 1., 1.])
    >>> x = torch.tensor([-3.0, 0.0, 0.3, 7.0], requires_grad=True)
    >>> y = fake_quantize_half_even_clamped_ste(x, 0.5, -2.0, 1.5, input_clamp=(0.0, 6.0))
    >>> y.sum().backward()
    >>> y.detach(), x.grad
    (tensor([0.0000, 0.0000, 0.5000, 1.5000]), tensor([0., 0., 1., 0.]))
    """
    if isinstance(lo, float):
        open_range = _open_range(lo, hi, input_clamp)
        if open_range is not None:  # hardtanh's gradient: below < x < above
            return _rounded_to_grid_in_place(F.hardtanh(x, *open_range), scale)
    if input_clamp is not None:
        x = F.hardtanh(x, *input_clamp)
    return _rounded_to_grid_in_place(torch.clamp(x, lo, hi), scale)  # gradient: lo <= x <= hi


def fake_quantize_ste(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int,
                      axis: int | None = None, rounding: str = "half_even",
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Differentiable fake_quantize: same forward, straight-through gradient for x.

    >>> x = torch.tensor([-3.0, 0.3, 1.2], requires_grad=True)
    >>> fake_quantize_ste(x, torch.tensor(0.5), 0, -4, 3).sum().backward()
    >>> x.grad
    tensor([0., 1., 1.])
    """
    if rounding == "stochastic":
        return FakeQuantizeStochasticSTE.apply(x, scale, zero_point, qmin, qmax, axis, generator)
    if generator is not None:
        raise ValueError(f"fake_quantize_ste: generator only applies to rounding='stochastic', "
                         f"got rounding={rounding!r}")
    if rounding == "half_even":
        return FakeQuantizeHalfEvenSTE.apply(x, scale, zero_point, qmin, qmax, axis)
    if rounding == "half_away":
        return FakeQuantizeHalfAwaySTE.apply(x, scale, zero_point, qmin, qmax, axis)
    raise ValueError(f"fake_quantize_ste: rounding must be one of {ROUNDINGS}, got {rounding!r}")
