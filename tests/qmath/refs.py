"""Independent references for the qmath tests: exact rational arithmetic with Python ints and
fractions.Fraction, written from the definitions (never by calling intq)."""

import math
from fractions import Fraction

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
HALF = Fraction(1, 2)


def round_half_even(v: Fraction) -> int:
    """Nearest integer, ties to even (Fraction.__round__ is round-half-even)."""
    return round(Fraction(v))


def round_half_away(v: Fraction) -> int:
    """Nearest integer, ties away from zero."""
    v = Fraction(v)
    magnitude = math.floor(abs(v) + HALF)
    return magnitude if v >= 0 else -magnitude


def clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, v))


def f32_div(x: float, s: float) -> Fraction:
    """The float32 quotient x / s (IEEE division of float32 operands), as an exact Fraction."""
    return Fraction(float(np.float32(x) / np.float32(s)))


def quantize_ref(x: float, scale: float, zp: int, qmin: int, qmax: int, mode: str) -> int:
    rounder = round_half_even if mode == "half_even" else round_half_away
    return clamp(rounder(f32_div(x, scale)) + zp, qmin, qmax)


def srdhm_ref(a: int, b: int) -> int:
    """a·b / 2^31 rounded half up; INT32_MIN·INT32_MIN saturates to INT32_MAX."""
    if a == b == INT32_MIN:
        return INT32_MAX
    return math.floor(Fraction(a * b, 2**31) + HALF)


def rounding_divide_by_pot_ref(x: int, exponent: int) -> int:
    """x / 2^exponent rounded to nearest, ties away from zero."""
    return round_half_away(Fraction(x, 2**exponent))


def mbqm_ref(acc: int, m0: int, shift: int) -> int:
    """TFLite double rounding: SRDHM(acc·2^left, m0), then divide by 2^right, ties away."""
    left, right = max(shift, 0), max(-shift, 0)
    return rounding_divide_by_pot_ref(srdhm_ref(acc * 2**left, m0), right)


def quantize_multiplier_ref(m: float) -> tuple[int, int]:
    """(M0, shift) with m = q·2^shift, q in [1/2, 1), M0 = round_half_away(q·2^31), carry and
    flush rules of TFLite's QuantizeMultiplier."""
    if m == 0:
        return 0, 0
    f = Fraction(m)
    shift = f.numerator.bit_length() - f.denominator.bit_length()
    while Fraction(2) ** shift <= f:
        shift += 1
    while Fraction(2) ** (shift - 1) > f:
        shift -= 1
    m0 = round_half_away(f * Fraction(2) ** (31 - shift))
    if m0 == 2**31:
        m0, shift = 2**30, shift + 1
    if shift < -31:
        return 0, 0
    return m0, shift
