"""Extension: learned step size (LSQ, Esser et al. 2020): fake quantization with a scale gradient.

Forward is fake_quantize (round half to even). Backward, with v = x/Δ and
[lo, hi] = nudged_range(Δ, z, qmin, qmax):

    ∂x̂/∂x = 1{lo <= x <= hi}                       (straight-through, as in intq.fakequant.ste)
    ∂x̂/∂Δ = round(v) - v      where lo <= x <= hi
           = qmin - z          where x < lo,    qmax - z where x > hi

and the scale gradient is multiplied by `grad_factor`, by default 1/sqrt(n·qmax_pos) with n the
number of elements sharing one scale and qmax_pos = qmax - z (LSQ's g = 1/sqrt(N·Q_P)). Per channel,
the scale gradient is summed over every axis except `axis`. The zero point gets no gradient.
Not used by the paper's workflow; a separate option for QAT at low bit widths.
"""

import math

import torch

from intq.fakequant.ste import inside_range, param_shape
from intq.qmath import fake_quantize

__all__ = ["FakeQuantizeLSQ", "fake_quantize_lsq", "lsq_grad_factor"]


class FakeQuantizeLSQ(torch.autograd.Function):
    """fake_quantize (half even) with STE for x and the LSQ gradient for a learnable scale."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, qmin, qmax, axis, grad_factor):
        scale = scale.detach()
        out = fake_quantize(x, scale, zero_point, qmin, qmax, axis)
        shape = param_shape(x.dim(), axis)
        z = torch.as_tensor(zero_point, device=x.device).reshape(shape).to(out.dtype)
        v = x / scale.reshape(shape).to(out.dtype)
        inside = inside_range(x, scale, zero_point, qmin, qmax, axis)
        clipped = torch.where(v < 0, qmin - z, qmax - z)
        d_scale = torch.where(inside, torch.round(v) - v, clipped)
        ctx.save_for_backward(inside, d_scale)
        ctx.axis, ctx.scale_shape, ctx.grad_factor = axis, scale.shape, grad_factor
        return out

    @staticmethod
    def backward(ctx, grad_output):
        inside, d_scale = ctx.saved_tensors
        per_element = grad_output * d_scale
        if ctx.axis is None:
            grad_scale = per_element.sum()
        else:
            dims = [d for d in range(per_element.dim()) if d != ctx.axis % per_element.dim()]
            grad_scale = per_element.sum(dim=dims)
        grad_scale = (grad_scale * ctx.grad_factor).reshape(ctx.scale_shape)
        return grad_output * inside, grad_scale, None, None, None, None, None


def lsq_grad_factor(x: torch.Tensor, scale: torch.Tensor, zero_point, qmax: int,
                    axis: int | None = None) -> float:
    """LSQ's g = 1/sqrt(n·(qmax - z)): n elements per scale, qmax - z positive levels (>= 1)."""
    n = x.numel() // max(scale.numel(), 1) if axis is not None else x.numel()
    levels = qmax - int(torch.as_tensor(zero_point).max())
    return 1.0 / math.sqrt(max(n, 1) * max(levels, 1))


def fake_quantize_lsq(x: torch.Tensor, scale: torch.Tensor, zero_point, qmin: int, qmax: int,
                      axis: int | None = None, grad_factor: float | None = None) -> torch.Tensor:
    """fake_quantize with gradients for x (STE) and for `scale` (LSQ); see module docstring."""
    if grad_factor is None:
        grad_factor = lsq_grad_factor(x, scale, zero_point, qmax, axis)
    return FakeQuantizeLSQ.apply(x, scale, zero_point, qmin, qmax, axis, grad_factor)
