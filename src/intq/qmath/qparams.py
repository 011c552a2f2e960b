"""Scale and zero point from a float range: affine (nudged zero point) and symmetric quantizers.

Both functions take `min_val`, `max_val` as tensors (0-d per tensor, 1-D per channel) or floats
and return `scale` (float32, > 0) and `zero_point` (int32) of the same shape on the same device.

- The range is first relaxed to contain 0: [min(min_val, 0), max(max_val, 0)].
- 0.0 is exactly representable: the zero point is an integer in [qmin, qmax], so
  quantize(0.0) = zero_point and dequantize(zero_point) = 0.0.
- A zero-width range (the tensor is identically 0) gets scale 1.0: every scale represents 0
  exactly and 1.0 keeps downstream requantization multipliers S1*S2/S3 moderate.
- Scales below float32's smallest normal number (2^-126) are raised to it, so a scale is never
  0 or subnormal.
- The arithmetic runs in float64; the scale is then rounded to float32, and the zero point is
  computed from that float32 scale.
"""

import numpy as np
import torch

from intq.qmath._checks import check_finite, check_grid, first_index, to_numpy

__all__ = ["affine_qparams", "symmetric_qparams"]

_FLOAT32_TINY = torch.finfo(torch.float32).tiny


def affine_qparams(min_val, max_val, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric qparams with TF-style nudging (zero point rounded half to even, clamped).

    With [lo, hi] the range relaxed to contain 0:
    `scale = (hi - lo) / (qmax - qmin)`, `zero_point = clamp(round(qmin - lo / scale), qmin, qmax)`.
    The represented (nudged) range is `[(qmin - zero_point)·scale, (qmax - zero_point)·scale]`.

    >>> affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 255)
    (tensor(0.0157), tensor(64, dtype=torch.int32))
    """
    where = "affine_qparams"
    check_grid(qmin, qmax, where)
    lo, hi = _relaxed_range(min_val, max_val, where)
    scale = _float32_scale(hi - lo, qmax - qmin, where)
    zero_point = torch.clamp(torch.round(qmin - lo / scale.double()), qmin, qmax).to(torch.int32)
    _check_grid_fits_float32(scale, zero_point, qmin, qmax, where)
    return scale, zero_point


def symmetric_qparams(min_val, max_val, qmin: int, qmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric qparams: the zero point is the grid midpoint, the scale covers [-amax, amax].

    `amax = max(|min_val|, |max_val|)`, `zero_point = ceil((qmin + qmax) / 2)` (0 for every
    signed grid, 128 for [0, 255], 127 for [0, 254]) and
    `scale = amax / min(qmax - zero_point, zero_point - qmin)`: the shorter side of the grid
    reaches amax, so nothing in [-amax, amax] clips. Narrow signed range at 8 bits gives
    TFLite's weight scale amax / 127; the full range [-128, 127] also uses amax / 127 and keeps
    the extra level -128 unused by [-amax, amax].

    >>> symmetric_qparams(torch.tensor(-0.5), torch.tensor(1.27), -127, 127)
    (tensor(0.0100), tensor(0, dtype=torch.int32))
    """
    where = "symmetric_qparams"
    check_grid(qmin, qmax, where)
    lo, hi = _relaxed_range(min_val, max_val, where)
    mid = (qmin + qmax + 1) // 2
    scale = _float32_scale(torch.maximum(-lo, hi), min(qmax - mid, mid - qmin), where)
    zero_point = torch.full_like(scale, mid, dtype=torch.int32)
    _check_grid_fits_float32(scale, zero_point, qmin, qmax, where)
    return scale, zero_point


def _relaxed_range(min_val, max_val, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated float64 [min(min_val, 0), max(max_val, 0)]."""
    lo = torch.as_tensor(min_val).detach().double()
    hi = torch.as_tensor(max_val, device=lo.device).detach().double()
    if lo.shape != hi.shape or lo.ndim > 1 or lo.numel() == 0:
        raise ValueError(f"{where}: min_val and max_val must have one equal 0-d or non-empty 1-D "
                         f"shape, got {tuple(lo.shape)} and {tuple(hi.shape)}")
    check_finite(lo, "min_val", where)
    check_finite(hi, "max_val", where)
    inverted = to_numpy(lo > hi)
    if inverted.any():
        index = first_index(inverted)
        raise ValueError(f"{where}: min_val > max_val (negative-width range) at index {index}: "
                         f"[{lo[index].item()}, {hi[index].item()}]")
    return torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)


def _float32_scale(width: torch.Tensor, steps: int, where: str) -> torch.Tensor:
    """float32 width / steps; 1.0 where width is 0, at least float32 tiny elsewhere."""
    scale = (width / steps).float().clamp(min=_FLOAT32_TINY)
    scale = torch.where(width == 0, torch.ones_like(scale), scale)
    check_finite(scale, f"scale (range width / {steps}) in float32", where)
    return scale


def _check_grid_fits_float32(scale, zero_point, qmin: int, qmax: int, where: str) -> None:
    """The dequantized ends (q - zero_point)·scale of the grid must be finite in float32."""
    for q in (qmin, qmax):
        end = to_numpy((q - zero_point).float() * scale)
        if not np.isfinite(end).all():
            index = first_index(~np.isfinite(end))
            raise ValueError(f"{where}: range too wide for float32: grid end ({q} - zero_point)"
                             f"·scale overflows at index {index}; clip the range")
