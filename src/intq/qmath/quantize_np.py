"""numpy quantize/dequantize with the semantics of intq.qmath.quantize (for integer runtimes).

    quantize:   q = clamp(round(x / scale) + zero_point, qmin, qmax)   -> int64
    dequantize: x̂ = (q - zero_point) · scale                          -> float64, exact

`x / scale` runs in the promoted dtype of x and scale (never below float32), so float32 inputs
give the same integers as the torch functions. `dequantize_np` computes in int64 and float64:
(q - zero_point)·scale is exact for |q - zero_point| < 2^29 and a float32 scale, so casting its
result to float32 reproduces torch `dequantize` bit for bit.
"""

import numpy as np

from intq.qmath._checks import channel_shape, check_finite, check_qparams
from intq.qmath.rounding import round_half_away_np, round_half_even_np

__all__ = ["dequantize_np", "quantize_half_away_np", "quantize_half_even_np"]

_INT32_BOUNDS = (-(2**31), 2**31 - 1)


def quantize_half_even_np(x, scale, zero_point, qmin: int, qmax: int,
                          axis: int | None = None) -> np.ndarray:
    """q = clamp(round_half_even(x / scale) + zero_point, qmin, qmax) as int64 (ONNX
    QuantizeLinear)."""
    return _quantize_np(x, scale, zero_point, qmin, qmax, axis, round_half_even_np,
                        "quantize_half_even_np")


def quantize_half_away_np(x, scale, zero_point, qmin: int, qmax: int,
                          axis: int | None = None) -> np.ndarray:
    """q = clamp(round_half_away(x / scale) + zero_point, qmin, qmax) as int64 (TFLite's
    reference Quantize)."""
    return _quantize_np(x, scale, zero_point, qmin, qmax, axis, round_half_away_np,
                        "quantize_half_away_np")


def dequantize_np(q, scale, zero_point, axis: int | None = None) -> np.ndarray:
    """x̂ = (q - zero_point) · scale in int64 then float64 (exact, see module docstring)."""
    where = "dequantize_np"
    q = np.asarray(q)
    check_qparams(scale, zero_point, *_INT32_BOUNDS, where)
    scale = np.asarray(scale)
    shape = channel_shape(q.shape, scale.size, axis, where)
    z = np.asarray(zero_point).astype(np.int64).reshape(shape)
    return (q.astype(np.int64) - z).astype(np.float64) * scale.astype(np.float64).reshape(shape)


def _quantize_np(x, scale, zero_point, qmin, qmax, axis, rounder, where) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{where}: x must be a float array, got dtype {x.dtype}")
    check_finite(x, "x", where)
    check_qparams(scale, zero_point, qmin, qmax, where)
    scale = np.asarray(scale)
    dtype = np.result_type(x.dtype, scale.dtype, np.float32)
    shape = channel_shape(x.shape, scale.size, axis, where)
    v = x.astype(dtype) / scale.astype(dtype).reshape(shape)
    z = np.asarray(zero_point).astype(dtype).reshape(shape)
    return np.clip(rounder(v) + z, qmin, qmax).astype(np.int64)
