"""Fake quantization with the straight-through estimator (STE), one autograd Function per rounding.

Forward: intq.qmath.fake_quantize, x̂ = (clamp(round(x/Δ) + z, qmin, qmax) - z)·Δ.
Backward: ∂L/∂x = ∂L/∂x̂ · 1{lo <= x <= hi}, with [lo, hi] = nudged_range(Δ, z, qmin, qmax) the
dequantized grid ends: the gradient passes unchanged inside the range and is zero where x is
clipped (PAPER.md 2). Scale and zero point get no gradient here (see intq.fakequant.lsq).

fake_quantize_half_even_clamped_ste is the same half-even forward and gradient for float32 x
in the fewest passes over x (what a QAT step runs for every activation and weight): clamp x
to the grid ends, then round and rescale; the backward is one pass over x and the gradient.
"""

import numpy as np
import torch

from intq.qmath import ROUNDINGS, fake_quantize, nudged_range

__all__ = [
    "FakeQuantizeHalfAwaySTE",
    "FakeQuantizeHalfEvenSTE",
    "FakeQuantizeStochasticSTE",
    "MAX_CLAMPED_GRID_OFFSET",
    "fake_quantize_half_even_clamped_ste",
    "fake_quantize_ste",
]

MAX_CLAMPED_GRID_OFFSET = 2**22  # the clamped form is exact for |q - zero_point| below this
_ONE, _ZERO = torch.ones(1), torch.zeros(1)


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


class _FakeQuantizeHalfEvenClampedSTE(torch.autograd.Function):
    """round_half_even(clamp(x, lo, hi) / scale)·scale; gradient where lo <= x <= hi.

    Per tensor, x itself is saved and the backward is one ``hardtanh_backward`` pass (gradient
    where below < x < above, the float32 neighbours outside [lo, hi]: the same set for float32
    x); per channel, a float 0/1 mask ``clamp(x) == x`` (comparing into and multiplying by a
    bool is ~4x slower on CPU)."""

    @staticmethod
    def forward(ctx, x, scale, lo, hi):
        clipped = torch.clamp(x, lo, hi)
        if ctx.needs_input_grad[0]:
            ctx.open_range = _open_range(lo, hi)
            ctx.save_for_backward(x if ctx.open_range is not None
                                  else torch.eq(clipped, x, out=torch.empty_like(x)))
        return clipped.div_(scale).round_().mul_(scale)

    @staticmethod
    def backward(ctx, grad_output):
        (saved,) = ctx.saved_tensors
        if ctx.open_range is None:
            return grad_output * saved, None, None, None
        grad = torch.ops.aten.hardtanh_backward(grad_output, saved, *ctx.open_range)
        return grad, None, None, None


def _open_range(lo, hi) -> tuple[float, float] | None:
    """(below, above): the float32 values next to Python-float ends lo, hi outside [lo, hi], or
    None for tensor ends, or when a neighbour is subnormal (an end is 0) and the CPU flushes
    subnormals (torch.set_flush_denormal), which would make the open range drop x = 0."""
    if not isinstance(lo, float):
        return None
    below = float(np.nextafter(np.float32(lo), np.float32(-np.inf)))
    above = float(np.nextafter(np.float32(hi), np.float32(np.inf)))
    if (lo == 0.0 or hi == 0.0) and not _subnormal_bounds_hold(below, above):
        return None
    return below, above


def _subnormal_bounds_hold(below: float, above: float) -> bool:
    """hardtanh_backward passes the gradient at 0 with these bounds (false when subnormals
    are flushed to zero)."""
    probe = torch.ops.aten.hardtanh_backward(_ONE, _ZERO, below, above)
    return bool(probe[0] == 1.0)


def fake_quantize_half_even_clamped_ste(x: torch.Tensor, scale, lo, hi) -> torch.Tensor:
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

    >>> x = torch.tensor([-3.0, 0.3, 1.2], requires_grad=True)
    >>> fake_quantize_half_even_clamped_ste(x, 0.5, -2.0, 1.5).sum().backward()
    >>> x.grad
    tensor([0., 1., 1.])
    """
    return _FakeQuantizeHalfEvenClampedSTE.apply(x, scale, lo, hi)


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
