"""Fixed-point requantization, bit-exact with gemmlowp and TFLite (numpy, vectorized, int64).

A real multiplier M (= S_in·S_w / S_out) is stored as an int32 M0 and a shift with
M ≈ M0 · 2^(shift - 31), M0 in [2^30, 2^31) (TFLite's QuantizeMultiplier). At run time
an int32 accumulator is scaled by

    multiply_by_quantized_multiplier(acc, M0, shift)
      = rounding_divide_by_pot(saturating_rounding_doubling_high_mul(acc · 2^max(shift, 0), M0),
                               max(-shift, 0))

(TFLite's double-rounding MultiplyByQuantizedMultiplier). As rationals:
SRDHM(a, b) = floor(a·b / 2^31 + 1/2) (round half up), saturated to INT32_MAX for
INT32_MIN·INT32_MIN; rounding_divide_by_pot(x, e) = x / 2^e rounded to nearest, ties away from
zero. The ONNX path instead requantizes in float32 with round half to even
(requantize_float32_half_even); the two may differ by 1 LSB.

All functions take integer arrays (or scalars) whose values fit int32, broadcast with numpy
rules (the caller shapes per-channel parameters for its channel axis), and return int32 arrays.
"""

import numpy as np

from intq.qmath._checks import check_finite, first_index
from intq.qmath.rounding import round_half_away_np

__all__ = [
    "INT32_MAX",
    "INT32_MIN",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "requantize_fixed_point",
    "requantize_float32_half_even",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real_multiplier) -> tuple[np.ndarray, np.ndarray]:
    """(M0, shift) int32 with real ≈ M0 · 2^(shift - 31), M0 in [2^30, 2^31) (TFLite).

    float64 frexp: real = q · 2^shift, q in [0.5, 1); M0 = round_half_away(q · 2^31). When that
    rounds to 2^31, M0 = 2^30 and shift + 1. A zero multiplier gives (0, 0); multipliers below
    about 2^-32 (shift < -31) are flushed to (0, 0) as TFLite does, since every int32
    accumulator would be shifted out. Multipliers >= 1 get a positive shift.

    >>> quantize_multiplier(np.array([0.5, 0.75, 3.0]))
    (array([1073741824, 1610612736, 1610612736], dtype=int32), array([0, 0, 2], dtype=int32))
    """
    where = "quantize_multiplier"
    real = np.asarray(real_multiplier, dtype=np.float64)
    check_finite(real, "real_multiplier", where)
    if (real < 0).any():
        index = first_index(np.atleast_1d(real < 0))
        raise ValueError(f"{where}: real_multiplier must be >= 0, got "
                         f"{np.atleast_1d(real)[index]} at index {index}")
    q, shift = np.frexp(real)
    m0 = round_half_away_np(q * 2.0**31).astype(np.int64)
    carry = m0 == 2**31
    m0 = np.where(carry, 2**30, m0)
    shift = np.where(carry, shift + 1, shift)
    flush = shift < -31
    return np.where(flush, 0, m0).astype(np.int32), np.where(flush, 0, shift).astype(np.int32)


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul: (a·b + nudge) / 2^31 truncated toward zero.

    nudge = 2^30 if a·b >= 0 else 1 - 2^30 (so the result is a·b / 2^31 rounded half up);
    INT32_MIN · INT32_MIN saturates to INT32_MAX.
    """
    where = "saturating_rounding_doubling_high_mul"
    a = _int32_values(a, "a", where)
    b = _int32_values(b, "b", where)
    ab = a * b
    n = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(n >= 0, n >> 31, -((-n) >> 31))
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    return np.where(overflow, INT32_MAX, high).astype(np.int32)


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent, round to nearest, ties away from zero.

    Formulation: mask = 2^e - 1, remainder = x & mask, threshold = (mask >> 1) + [x < 0],
    result = (x >> e) + [remainder > threshold], with arithmetic shifts; 0 <= exponent <= 31.
    """
    where = "rounding_divide_by_pot"
    x = _int32_values(x, "x", where)
    e = _int32_values(exponent, "exponent", where)
    if ((e < 0) | (e > 31)).any():
        raise ValueError(f"{where}: exponent must be in [0, 31], got {np.unique(e)}")
    mask = (np.int64(1) << e) - 1
    threshold = (mask >> 1) + (x < 0)
    return ((x >> e) + ((x & mask) > threshold)).astype(np.int32)


def multiply_by_quantized_multiplier(acc, m0, shift) -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier (double rounding): ≈ acc · m0 · 2^(shift - 31).

    left = max(shift, 0), right = max(-shift, 0);
    result = rounding_divide_by_pot(SRDHM(acc · 2^left, m0), right). shift must lie in
    [-31, 30] and acc · 2^left must fit int32 (TFLite's behaviour is undefined otherwise).
    """
    where = "multiply_by_quantized_multiplier"
    acc = _int32_values(acc, "acc", where)
    shift = _int32_values(shift, "shift", where)
    if ((shift < -31) | (shift > 30)).any():
        raise ValueError(f"{where}: shift must be in [-31, 30], got {np.unique(shift)}")
    shifted = acc << np.maximum(shift, 0)
    overflow = np.atleast_1d((shifted < INT32_MIN) | (shifted > INT32_MAX))
    if overflow.any():
        index = first_index(overflow)
        raise ValueError(f"{where}: acc · 2^shift overflows int32 at index {index}; use a "
                         "smaller multiplier or a larger output scale")
    high = saturating_rounding_doubling_high_mul(shifted, m0)
    return rounding_divide_by_pot(high, np.maximum(-shift, 0))


def requantize_fixed_point(acc, m0, shift, zero_point, qmin: int, qmax: int) -> np.ndarray:
    """TFLite output stage: clamp(multiply_by_quantized_multiplier(acc, m0, shift) + zero_point,
    qmin, qmax), the addition in int64 (saturating, never wrapping)."""
    where = "requantize_fixed_point"
    zero_point = _int32_values(zero_point, "zero_point", where)
    scaled = multiply_by_quantized_multiplier(acc, m0, shift).astype(np.int64)
    return np.clip(scaled + zero_point, qmin, qmax).astype(np.int32)


def requantize_float32_half_even(acc, multiplier_f32, zero_point, qmin: int,
                                 qmax: int) -> np.ndarray:
    """ONNX QLinearConv/QLinearMatMul output stage (as ONNX Runtime computes it) in float32.

    clamp(round_half_even(float32(acc) · float32(multiplier)) + zero_point, qmin, qmax): acc is
    converted to float32 (exact for |acc| <= 2^24, else rounded to nearest even), the product is
    one float32 multiplication, then rounded half to even.
    """
    where = "requantize_float32_half_even"
    acc = _int32_values(acc, "acc", where)
    multiplier = np.asarray(multiplier_f32).astype(np.float32)
    check_finite(multiplier, "multiplier_f32", where)
    zero_point = _int32_values(zero_point, "zero_point", where)
    scaled = np.rint(acc.astype(np.float32) * multiplier).astype(np.float64)
    return np.clip(scaled + zero_point, qmin, qmax).astype(np.int32)


def _int32_values(values, name: str, where: str) -> np.ndarray:
    """int64 copy of an integer array whose values fit int32."""
    a = np.asarray(values)
    if a.dtype.kind not in "iu":
        raise ValueError(f"{where}: {name} must be an integer array, got dtype {a.dtype}")
    outside = np.atleast_1d((a < INT32_MIN) | (a > INT32_MAX))
    if outside.any():
        index = first_index(outside)
        raise ValueError(f"{where}: {name} must fit int32, got {np.atleast_1d(a)[index]} "
                         f"at index {index}")
    return a.astype(np.int64)
