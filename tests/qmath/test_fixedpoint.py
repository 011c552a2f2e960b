"""Fixed-point requantization vs exact rational references (Python ints, Fractions).

Edges: ±2^31 boundaries, INT32_MIN·INT32_MIN, exact ties, tiny and >= 1 multipliers, the
2^31 rounding carry of quantize_multiplier.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intq.qmath import (
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize_fixed_point,
    requantize_float32_half_even,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)

from .refs import (
    INT32_MAX,
    INT32_MIN,
    clamp,
    mbqm_ref,
    quantize_multiplier_ref,
    round_half_even,
    rounding_divide_by_pot_ref,
    srdhm_ref,
)

EDGE_INT32 = [INT32_MIN, INT32_MIN + 1, INT32_MIN + 2, -(2**30) - 1, -(2**30), -(2**30) + 1,
              -3, -2, -1, 0, 1, 2, 3, 2**30 - 1, 2**30, 2**30 + 1, INT32_MAX - 1, INT32_MAX]
int32s = st.one_of(st.sampled_from(EDGE_INT32), st.integers(INT32_MIN, INT32_MAX))
multipliers = st.one_of(st.just(0), st.integers(2**30, INT32_MAX),
                        st.sampled_from([2**30, 2**30 + 1, INT32_MAX]))
SETTINGS = settings(max_examples=150, deadline=None)


def _arr(values):
    return np.array(values, dtype=np.int64)


@SETTINGS
@given(st.lists(st.tuples(int32s, int32s), min_size=1, max_size=50))
def test_srdhm_matches_round_half_up_of_exact_product(pairs):
    a, b = zip(*pairs, strict=True)
    got = saturating_rounding_doubling_high_mul(np.array(a, np.int32), np.array(b, np.int32))
    assert got.dtype == np.int32
    assert got.tolist() == [srdhm_ref(x, y) for x, y in pairs]


def test_srdhm_edges_and_ties():
    a = _arr([INT32_MIN, INT32_MIN, INT32_MAX, 3, -3, 1, -1, 5, -5])
    b = _arr([INT32_MIN, INT32_MAX, INT32_MAX, 2**30, 2**30, 2**30, 2**30, 2**30, 2**30])
    want = [INT32_MAX, -INT32_MAX, INT32_MAX - 1, 2, -1, 1, 0, 3, -2]  # ties round half up
    assert saturating_rounding_doubling_high_mul(a, b).tolist() == want
    assert want == [srdhm_ref(x, y) for x, y in zip(a.tolist(), b.tolist(), strict=True)]


@SETTINGS
@given(st.lists(st.tuples(int32s, st.integers(0, 31)), min_size=1, max_size=50))
def test_rounding_divide_by_pot_matches_ties_away_reference(pairs):
    x, e = zip(*pairs, strict=True)
    got = rounding_divide_by_pot(_arr(x), _arr(e))
    assert got.tolist() == [rounding_divide_by_pot_ref(v, k) for v, k in pairs]


@pytest.mark.parametrize("exponent", [1, 2, 5, 30, 31])
def test_rounding_divide_by_pot_exact_ties(exponent):
    half = 2 ** (exponent - 1)
    odd = [k for k in (1, 3, 5, -1, -3, -5) if abs(k * half) <= INT32_MAX]
    x = _arr([k * half for k in odd])
    want = [(k + (1 if k > 0 else -1)) // 2 for k in odd]  # k/2 with k odd, ties away from 0
    assert rounding_divide_by_pot(x, exponent).tolist() == want
    assert rounding_divide_by_pot(_arr([INT32_MIN, INT32_MAX]), 31).tolist() == [-1, 1]
    assert rounding_divide_by_pot(_arr([INT32_MIN, -7, 7]), 0).tolist() == [INT32_MIN, -7, 7]


@st.composite
def mbqm_cases(draw):
    shift = draw(st.one_of(st.integers(-31, 30), st.sampled_from([-31, -1, 0, 1, 30])))
    left = max(shift, 0)
    bound_lo, bound_hi = INT32_MIN >> left, INT32_MAX >> left  # acc·2^left must fit int32
    acc = draw(st.one_of(st.integers(bound_lo, bound_hi), st.sampled_from([bound_lo, bound_hi])))
    return acc, draw(multipliers), shift


@SETTINGS
@given(st.lists(mbqm_cases(), min_size=1, max_size=50), st.integers(-200, 200),
       st.sampled_from([(-128, 127), (0, 255), (-32768, 32767)]))
def test_multiply_by_quantized_multiplier_and_requantize(cases, zp, grid):
    acc, m0, shift = (_arr(column) for column in zip(*cases, strict=True))
    got = multiply_by_quantized_multiplier(acc, m0, shift)
    want = [mbqm_ref(*case) for case in cases]
    assert got.dtype == np.int32 and got.tolist() == want
    for (a, m, s), w in zip(cases, want, strict=True):  # double rounding: within 1 of exact
        assert abs(w - Fraction(a * m) * Fraction(2) ** (s - 31)) <= 1
    requant = requantize_fixed_point(acc, m0, shift, zp, *grid)
    assert requant.tolist() == [clamp(w + zp, *grid) for w in want]


def test_multiply_by_quantized_multiplier_broadcasts_per_channel():
    acc = np.arange(-600, 600, 5, dtype=np.int32).reshape(2, 3, -1)  # channel axis 1
    m0, shift = quantize_multiplier(np.array([0.0031, 0.7, 1.9]))
    got = multiply_by_quantized_multiplier(acc, m0[None, :, None], shift[None, :, None])
    want = [[[mbqm_ref(int(a), int(m0[c]), int(shift[c])) for a in acc[n, c]]
             for c in range(3)] for n in range(2)]
    assert got.tolist() == want


@SETTINGS
@given(st.lists(st.one_of(
    st.floats(0, 1e12),
    st.floats(0, 2.0**-28),
    st.integers(-40, 40).map(lambda e: 2.0**e),
    st.integers(-40, 40).map(lambda e: math.nextafter(2.0**e, 0)),
    st.builds(lambda j, e: (2 * j + 1) * 2.0 ** (e - 32),  # q·2^31 = j + 1/2: an exact tie
              st.integers(2**30, 2**31 - 2), st.integers(-20, 20)),
), min_size=1, max_size=30))
def test_quantize_multiplier_matches_exact_reference(reals):
    m0, shift = quantize_multiplier(np.array(reals))
    assert m0.dtype == shift.dtype == np.int32
    want = [quantize_multiplier_ref(r) for r in reals]
    assert list(zip(m0.tolist(), shift.tolist(), strict=True)) == want
    for r, (m, s) in zip(reals, want, strict=True):
        if m:
            assert 2**30 <= m < 2**31
            assert abs(m * Fraction(2) ** (s - 31) - Fraction(r)) <= Fraction(2) ** (s - 32)


def test_quantize_multiplier_edges():
    reals = np.array([0.0, 0.5, 1.0, 3.0, 1 - 2.0**-40, 2.0**-32, 2.0**-33, 1e-30, 5e-324])
    m0, shift = quantize_multiplier(reals)
    assert m0.tolist() == [0, 2**30, 2**30, 3 * 2**29, 2**30, 2**30, 0, 0, 0]
    assert shift.tolist() == [0, 0, 1, 2, 1, -31, 0, 0, 0]  # carry of 1 - 2^-40; flushed tinies
    assert quantize_multiplier(0.25)[0].shape == ()


@SETTINGS
@given(st.lists(st.tuples(int32s, st.floats(2.0**-20, 10.0, width=32)), min_size=1, max_size=50),
       st.integers(-128, 127), st.sampled_from([(-128, 127), (INT32_MIN, INT32_MAX)]))
def test_requantize_float32_half_even_matches_reference(pairs, zp, grid):
    acc, mult = zip(*pairs, strict=True)
    got = requantize_float32_half_even(_arr(acc), np.array(mult, np.float32), zp, *grid)
    want = []
    for a, m in pairs:  # float32·float32 is exact in float64; one rounding to float32
        product = np.float32(float(np.float32(a)) * float(np.float32(m)))
        want.append(clamp(round_half_even(Fraction(float(product))) + zp, *grid))
    assert got.tolist() == want


def test_requantize_float32_ties_and_large_accumulators():
    acc = _arr([5, -5, 7, -7, 2**24 + 1, 2**24 + 3])
    got = requantize_float32_half_even(acc, np.float32(0.5), 0, INT32_MIN, INT32_MAX)
    # 2.5 -> 2, -2.5 -> -2, 3.5 -> 4, -3.5 -> -4; float32(2^24 + 1) = 2^24, float32(2^24+3) = 2^24+4
    assert got.tolist() == [2, -2, 4, -4, 2**23, 2**23 + 2]
    got = requantize_float32_half_even(_arr([2**24 + 1]), np.float32(1.0), 0, INT32_MIN, INT32_MAX)
    assert got.tolist() == [2**24]  # the accumulator itself is rounded to float32 first


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: quantize_multiplier(np.array([0.5, -0.1])),
         r"quantize_multiplier: real_multiplier must be >= 0, got -0.1 at index \(1,\)"),
        (lambda: quantize_multiplier(np.nan), r"real_multiplier must be finite"),
        (lambda: quantize_multiplier(np.inf), r"real_multiplier must be finite"),
        (lambda: saturating_rounding_doubling_high_mul(_arr([2**31]), 1),
         r"saturating_rounding_doubling_high_mul: a must fit int32, got 2147483648"),
        (lambda: saturating_rounding_doubling_high_mul(np.array([1.5]), 1),
         r"a must be an integer array"),
        (lambda: rounding_divide_by_pot(5, 32), r"exponent must be in \[0, 31\]"),
        (lambda: rounding_divide_by_pot(5, -1), r"exponent must be in \[0, 31\]"),
        (lambda: multiply_by_quantized_multiplier(2**20, 2**30, 12),
         r"acc · 2\^shift overflows int32"),
        (lambda: multiply_by_quantized_multiplier(1, 2**30, 31), r"shift must be in \[-31, 30\]"),
        (lambda: requantize_float32_half_even(1, np.float32(np.nan), 0, -128, 127),
         r"multiplier_f32 must be finite"),
    ],
)
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()
