"""Quantize, dequantize and fake-quantize torch tensors (affine grid, per tensor or per channel).

    quantize:      q = clamp(round(x / scale) + zero_point, qmin, qmax)
    dequantize:    x̂ = (q - zero_point) · scale
    fake_quantize: x̂ = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) · scale

`x / scale` is computed in float32 for float32 inputs (in the promoted dtype, never below
float32, otherwise), as ONNX QuantizeLinear does; the rounding mode is in the function name.
`scale` and `zero_point` are 0-d (or single-element) for per-tensor quantization, or 1-D with one
value per channel along `axis` (any axis of x). `quantize_*` return torch.int32 tensors;
`dequantize` and `fake_quantize` return floats, exactly `dequantize(quantize(x))`. NaN/Inf in x,
non-positive scales and zero points outside [qmin, qmax] raise ValueError. Forward only: the
straight-through gradients live in intq.fakequant.
"""

import torch

from intq.qmath._checks import channel_shape, check_finite, check_qparams
from intq.qmath.rounding import round_half_away, round_stochastic

__all__ = [
    "ROUNDINGS",
    "dequantize",
    "fake_quantize",
    "nudged_range",
    "quantize_half_away",
    "quantize_half_even",
    "quantize_stochastic",
]

ROUNDINGS = ("half_even", "half_away", "stochastic")

_INT32_BOUNDS = (-(2**31), 2**31 - 1)


def quantize_half_even(x, scale, zero_point, qmin: int, qmax: int, axis: int | None = None):
    """q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax) as int32.

    >>> quantize_half_even(torch.tensor([0.25, 0.75, 9.0]), torch.tensor(0.5), 0, -4, 3)
    tensor([0, 2, 3], dtype=torch.int32)
    """
    return _quantize(x, scale, zero_point, qmin, qmax, axis, "half_even", None)


def quantize_half_away(x, scale, zero_point, qmin: int, qmax: int, axis: int | None = None):
    """q = clamp(round_half_away(x / scale) + zero_point, qmin, qmax) as int32.

    >>> quantize_half_away(torch.tensor([0.25, 0.75, -0.25]), torch.tensor(0.5), 0, -4, 3)
    tensor([ 1,  2, -1], dtype=torch.int32)
    """
    return _quantize(x, scale, zero_point, qmin, qmax, axis, "half_away", None)


def quantize_stochastic(x, scale, zero_point, qmin: int, qmax: int, axis: int | None = None,
                        generator: torch.Generator | None = None):
    """q = clamp(round_stochastic(x / scale) + zero_point, qmin, qmax) as int32 (E[q] = x/scale
    + zero_point inside the grid); seed `generator` for reproducible draws."""
    return _quantize(x, scale, zero_point, qmin, qmax, axis, "stochastic", generator)


def dequantize(q, scale, zero_point, axis: int | None = None) -> torch.Tensor:
    """x̂ = (q - zero_point) · scale, in the scale's float dtype (at least float32).

    Exact up to one final rounding to the output dtype for |q - zero_point| < 2^24.
    """
    where = "dequantize"
    q = torch.as_tensor(q)
    check_qparams(scale, zero_point, *_INT32_BOUNDS, where)
    scale = torch.as_tensor(scale, device=q.device)
    dtype = torch.promote_types(scale.dtype, torch.float32)
    shape = channel_shape(tuple(q.shape), scale.numel(), axis, where)
    s = scale.to(dtype).reshape(shape)
    z = torch.as_tensor(zero_point, device=q.device).to(dtype).reshape(shape)
    return (q.to(dtype) - z) * s


def fake_quantize(x, scale, zero_point, qmin: int, qmax: int, axis: int | None = None,
                  rounding: str = "half_even", generator: torch.Generator | None = None):
    """x̂ = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) · scale, x's dtype.

    `rounding` is one of ROUNDINGS; `generator` only applies to "stochastic".

    >>> fake_quantize(torch.tensor([0.3, 0.74, 5.0]), torch.tensor(0.5), 0, -4, 3)
    tensor([0.5000, 0.5000, 1.5000])
    """
    x_c, s, z = _prepare(x, scale, zero_point, qmin, qmax, axis, "fake_quantize")
    q = _grid_values(x_c, s, z, qmin, qmax, rounding, generator, "fake_quantize")
    return q.sub_(z).mul_(s).to(x.dtype)


def nudged_range(scale, zero_point, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The dequantized grid ends [(qmin - zero_point)·scale, (qmax - zero_point)·scale].

    Float values in this interval (in the scale's dtype, at least float32) are not clipped by
    fake_quantize; the straight-through estimator passes gradients exactly there.

    >>> nudged_range(torch.tensor([0.5, 0.25]), torch.tensor([1, 0]), -4, 3)
    (tensor([-2.5000, -1.0000]), tensor([1.0000, 0.7500]))
    """
    check_qparams(scale, zero_point, qmin, qmax, "nudged_range")
    scale = torch.as_tensor(scale)
    dtype = torch.promote_types(scale.dtype, torch.float32)
    z = torch.as_tensor(zero_point, device=scale.device).to(dtype)
    return (qmin - z) * scale.to(dtype), (qmax - z) * scale.to(dtype)


def _quantize(x, scale, zero_point, qmin, qmax, axis, rounding, generator) -> torch.Tensor:
    where = f"quantize_{rounding}"
    x_c, s, z = _prepare(x, scale, zero_point, qmin, qmax, axis, where)
    return _grid_values(x_c, s, z, qmin, qmax, rounding, generator, where).to(torch.int32)


def _grid_values(x, s, z, qmin, qmax, rounding, generator, where) -> torch.Tensor:
    """clamp(round(x / s) + z, qmin, qmax) as a new float tensor (updated in place after the
    division: one allocation instead of four)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"{where}: rounding must be one of {ROUNDINGS}, got {rounding!r}")
    if generator is not None and rounding != "stochastic":
        raise ValueError(f"{where}: generator only applies to rounding='stochastic', "
                         f"got rounding={rounding!r}")
    v = x / s
    if rounding == "half_even":
        v.round_()
    elif rounding == "half_away":
        v = round_half_away(v)
    else:
        v = round_stochastic(v, generator)
    return v.add_(z).clamp_(qmin, qmax)


def _prepare(x, scale, zero_point, qmin, qmax, axis, where):
    """Validated x, scale, zero_point in one float compute dtype, shaped to broadcast."""
    if not isinstance(x, torch.Tensor) or not torch.is_floating_point(x):
        raise ValueError(f"{where}: x must be a float tensor, got "
                         f"{getattr(x, 'dtype', type(x).__name__)}")
    check_finite(x, "x", where)
    check_qparams(scale, zero_point, qmin, qmax, where)
    scale = torch.as_tensor(scale, device=x.device)
    dtype = torch.promote_types(torch.promote_types(x.dtype, scale.dtype), torch.float32)
    shape = channel_shape(tuple(x.shape), scale.numel(), axis, where)
    s = scale.to(dtype).reshape(shape)
    z = torch.as_tensor(zero_point, device=x.device).to(dtype).reshape(shape)
    return x.to(dtype), s, z
