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
- The arithmetic runs in float64 (numpy: a few values per tensor or channel, no torch kernel
  launches); the scale is then rounded to float32, and the zero point is
  computed from that float32 scale.
"""

import math

import numpy as np
import torch

from intq.qmath._checks import check_finite, check_grid, first_index, to_numpy

__all__ = ["affine_qparams", "qparams_from_floats", "symmetric_qparams", "symmetric_qparams_torch"]

_FLOAT32_TINY = np.float32(np.finfo(np.float32).tiny)
_FLOAT32_OVERFLOW = 2.0**128 - 2.0**103  # float32 rounding of |v| >= this is inf
_EXACT_GRID_LEVELS = 2**24


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
    per_tensor = _per_tensor_qparams(min_val, max_val, qmin, qmax, symmetric=False)
    if per_tensor is not None:
        return per_tensor
    lo, hi, device = _relaxed_range(min_val, max_val, where)
    scale = _float32_scale(hi - lo, qmax - qmin, where)
    zero_point = np.clip(np.rint(qmin - lo / scale.astype(np.float64)), qmin, qmax)
    return _checked_qparams(scale, zero_point.astype(np.int32), qmin, qmax, device, where)


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
    per_tensor = _per_tensor_qparams(min_val, max_val, qmin, qmax, symmetric=True)
    if per_tensor is not None:
        return per_tensor
    lo, hi, device = _relaxed_range(min_val, max_val, where)
    mid = (qmin + qmax + 1) // 2
    scale = _float32_scale(np.maximum(-lo, hi), min(qmax - mid, mid - qmin), where)
    zero_point = np.full_like(scale, mid, dtype=np.int32)
    return _checked_qparams(scale, zero_point, qmin, qmax, device, where)


def symmetric_qparams_torch(min_val: torch.Tensor, max_val: torch.Tensor, qmin: int,
                            qmax: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """symmetric_qparams of float ranges (one per channel) in a few torch ops on their device:
    the same float64 division and float32 rounding as the array path, without its checks'
    per-call cost (QAT computes every weight's qparams at every step). None, for
    symmetric_qparams to decide (and raise), unless every range is finite and ordered and the
    grid ends stay finite in float32. The grid must be valid (check_grid).

    >>> symmetric_qparams_torch(torch.tensor([-0.5, 0.0]), torch.tensor([1.27, 0.0]), -127, 127)
    (tensor([0.0100, 1.0000]), tensor([0, 0], dtype=torch.int32))
    """
    if not 0.0 <= (max_val - min_val).min().item() < math.inf:
        return None
    mid = (qmin + qmax + 1) // 2
    amax = torch.maximum(-min_val, max_val).clamp_min_(0.0)
    scale = (amax.double() / min(qmax - mid, mid - qmin)).float()
    scale = scale.clamp_min_(float(_FLOAT32_TINY)).masked_fill_(amax == 0, 1.0)
    if not scale.max().item() * max(qmax - mid, mid - qmin) < _FLOAT32_OVERFLOW:
        return None
    return scale, torch.full_like(scale, mid, dtype=torch.int32)


def _per_tensor_qparams(min_val, max_val, qmin: int, qmax: int,
                        symmetric: bool) -> tuple[torch.Tensor, torch.Tensor] | None:
    """qparams_from_floats of a 0-d tensor range, as 0-d tensors on its device; None (the
    array path decides, and raises) for other inputs or where that returns None."""
    if not (isinstance(min_val, torch.Tensor) and isinstance(max_val, torch.Tensor)
            and min_val.ndim == 0 and max_val.ndim == 0 and min_val.device == max_val.device):
        return None
    qparams = qparams_from_floats(min_val.item(), max_val.item(), qmin, qmax, symmetric)
    if qparams is None:
        return None
    device = min_val.device
    return (torch.tensor(qparams[0], dtype=torch.float32, device=device),
            torch.tensor(qparams[1], dtype=torch.int32, device=device))


def qparams_from_floats(lo: float, hi: float, qmin: int, qmax: int,
                        symmetric: bool) -> tuple[float, int] | None:
    """(scale, zero_point) of symmetric_qparams / affine_qparams for one range given as Python
    floats, on a valid grid (check_grid), computed in Python floats: the same float64
    operations and float32 roundings as the array path, without its per-call overhead (QAT
    computes these every step). None unless the range is finite and ordered, the grid spans
    at most 2^24 levels (so ``(q - zero_point)·scale`` is exact in float64) and nothing
    overflows float32; the tensor functions then raise the matching error."""
    if qmax - qmin > _EXACT_GRID_LEVELS or not (math.isfinite(lo) and math.isfinite(hi)
                                                and lo <= hi):
        return None
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    mid = (qmin + qmax + 1) // 2
    width, steps = (max(-lo, hi), min(qmax - mid, mid - qmin)) if symmetric else (hi - lo,
                                                                                  qmax - qmin)
    if steps <= 0 or width / steps >= _FLOAT32_OVERFLOW:
        return None
    scale = 1.0 if width == 0 else max(float(np.float32(width / steps)), float(_FLOAT32_TINY))
    zero_point = mid if symmetric else min(max(round(qmin - lo / scale), qmin), qmax)
    if max(abs(qmin - zero_point), abs(qmax - zero_point)) * scale >= _FLOAT32_OVERFLOW:
        return None
    return scale, zero_point


def _relaxed_range(min_val, max_val, where: str) -> tuple[np.ndarray, np.ndarray, torch.device]:
    """Validated float64 [min(min_val, 0), max(max_val, 0)] and the device of min_val."""
    lo_t = torch.as_tensor(min_val)
    hi_t = torch.as_tensor(max_val, device=lo_t.device)
    if lo_t.shape != hi_t.shape or lo_t.ndim > 1 or lo_t.numel() == 0:
        raise ValueError(f"{where}: min_val and max_val must have one equal 0-d or non-empty 1-D "
                         f"shape, got {tuple(lo_t.shape)} and {tuple(hi_t.shape)}")
    lo, hi = to_numpy(lo_t).astype(np.float64), to_numpy(hi_t).astype(np.float64)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        check_finite(lo, "min_val", where)
        check_finite(hi, "max_val", where)
    inverted = lo > hi
    if inverted.any():
        index = first_index(inverted)
        raise ValueError(f"{where}: min_val > max_val (negative-width range) at index {index}: "
                         f"[{lo[index].item()}, {hi[index].item()}]")
    return np.minimum(lo, 0.0), np.maximum(hi, 0.0), lo_t.device


def _float32_scale(width: np.ndarray, steps: int, where: str) -> np.ndarray:
    """float32 width / steps; 1.0 where width is 0, at least float32 tiny elsewhere."""
    with np.errstate(over="ignore"):
        scale = np.maximum((width / steps).astype(np.float32), _FLOAT32_TINY)
    scale = np.where(width == 0, np.float32(1.0), scale)
    if not np.isfinite(scale).all():
        check_finite(scale, f"scale (range width / {steps}) in float32", where)
    return scale


def _checked_qparams(scale: np.ndarray, zero_point: np.ndarray, qmin: int, qmax: int,
                     device: torch.device, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero_point) as torch tensors on `device`, once the dequantized ends
    (q - zero_point)·scale of the grid are finite in float32."""
    zero_point_64 = zero_point.astype(np.int64)
    for q in (qmin, qmax):
        with np.errstate(over="ignore"):
            end = (q - zero_point_64).astype(np.float32) * scale
        if not np.isfinite(end).all():
            index = first_index(~np.isfinite(end))
            raise ValueError(f"{where}: range too wide for float32: grid end ({q} - zero_point)"
                             f"·scale overflows at index {index}; clip the range")
    return (torch.from_numpy(np.asarray(scale)).to(device),
            torch.from_numpy(np.asarray(zero_point)).to(device))
