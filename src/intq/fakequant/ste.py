"""Fake quantization with the straight-through estimator (STE), one autograd Function per rounding.

Forward: intq.qmath.fake_quantize, x̂ = (clamp(round(x/Δ) + z, qmin, qmax) - z)·Δ.
Backward: ∂L/∂x = ∂L/∂x̂ · 1{lo <= x <= hi}, with [lo, hi] = nudged_range(Δ, z, qmin, qmax) the
dequantized grid ends: the gradient passes unchanged inside the range and is zero where x is
clipped (PAPER.md 2). Scale and zero point get no gradient here (see intq.fakequant.lsq).
"""

import torch

from intq.qmath import ROUNDINGS, fake_quantize, nudged_range

__all__ = [
    "FakeQuantizeHalfAwaySTE",
    "FakeQuantizeHalfEvenSTE",
    "FakeQuantizeStochasticSTE",
    "fake_quantize_ste",
]


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
