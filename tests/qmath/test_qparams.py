"""affine_qparams / symmetric_qparams: 0.0 exact for every range, coverage, edge ranges, errors."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from intq.qmath import (
    affine_qparams,
    dequantize,
    fake_quantize,
    qparams_from_floats,
    qrange,
    quantize_half_even,
    symmetric_qparams,
    symmetric_qparams_torch,
)

GRIDS = sorted(
    {qrange(b, s, n) for b in range(2, 17) for s in (True, False) for n in (False, True)}
)
FLOAT32_MAX = float(np.finfo(np.float32).max)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)
finite_f32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


def _range_pair(a: float, b: float) -> tuple[float, float]:
    return min(a, b), max(a, b)


def _assert_zero_exact(scale, zp, qmin, qmax):
    assert scale.dtype == torch.float32 and zp.dtype == torch.int32
    assert torch.all(scale > 0) and torch.all(torch.isfinite(scale))
    assert torch.all((qmin <= zp) & (zp <= qmax))
    zero = torch.zeros(scale.shape)
    axis = 0 if scale.ndim else None
    assert torch.equal(quantize_half_even(zero, scale, zp, qmin, qmax, axis), zp)
    assert torch.equal(fake_quantize(zero, scale, zp, qmin, qmax, axis), zero)
    assert torch.equal(dequantize(zp, scale, zp, axis), zero)


@settings(max_examples=200, deadline=None)
@given(finite_f32, finite_f32, st.sampled_from(GRIDS))
def test_affine_zero_exact_and_range_covered(a, b, grid):
    lo, hi = _range_pair(a, b)
    qmin, qmax = grid
    try:
        scale, zp = affine_qparams(torch.tensor(lo), torch.tensor(hi), qmin, qmax)
    except ValueError as err:  # only a range near float32's limits may overflow the grid
        assert "range too wide for float32" in str(err)
        assert max(-lo, hi) > FLOAT32_MAX / 4
        return
    _assert_zero_exact(scale, zp, qmin, qmax)
    lo_r, hi_r = Fraction(min(lo, 0.0)), Fraction(max(hi, 0.0))
    s, z, steps = Fraction(scale.item()), zp.item(), qmax - qmin
    if hi_r == lo_r:
        assert scale.item() == 1.0
        return
    ideal = (hi_r - lo_r) / steps
    if ideal >= FLOAT32_TINY:
        assert abs(s - ideal) <= ideal * Fraction(1, 2**23)
    else:
        assert scale.item() == FLOAT32_TINY
    # the nudged grid [(qmin - z)·s, (qmax - z)·s] reaches the range ends within half a step
    slack = s * (Fraction(1, 2) + Fraction(steps, 2**23) + Fraction(1, 2**30))
    assert (qmin - z) * s <= lo_r + slack
    assert (qmax - z) * s >= hi_r - slack


def test_affine_worked_example():
    scale, zp = affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 0, 255)
    assert scale.item() == np.float32(4 / 255)
    assert zp.item() == round(1 / float(np.float32(4 / 255)))  # 63.75 -> 64
    assert zp.item() == 64


@pytest.mark.parametrize("qmin, qmax", [(-128, 127), (0, 255), (-7, 7), (0, 65535)])
def test_affine_all_positive_and_all_negative(qmin, qmax):
    scale, zp = affine_qparams(torch.tensor(2.1), torch.tensor(3.5), qmin, qmax)
    assert zp.item() == qmin and scale.item() == np.float32(3.5 / (qmax - qmin))
    scale, zp = affine_qparams(torch.tensor(-3.5), torch.tensor(-2.1), qmin, qmax)
    assert zp.item() == qmax and scale.item() == np.float32(3.5 / (qmax - qmin))


@pytest.mark.parametrize("fn", [affine_qparams, symmetric_qparams])
def test_zero_width_ranges_get_scale_one(fn):
    scale, zp = fn(torch.tensor([0.0, -0.0, 0.0]), torch.tensor([0.0, 0.0, -0.0]), -128, 127)
    assert torch.equal(scale, torch.ones(3))
    _assert_zero_exact(scale, zp, -128, 127)


@pytest.mark.parametrize("fn", [affine_qparams, symmetric_qparams])
def test_tiny_ranges_get_a_normal_float32_scale(fn):
    scale, zp = fn(torch.tensor(-1e-45), torch.tensor(1e-45), -128, 127)
    assert scale.item() == FLOAT32_TINY
    _assert_zero_exact(scale, zp, -128, 127)


def test_huge_ranges_and_overflow():
    scale, zp = affine_qparams(torch.tensor(-1e38), torch.tensor(3e38), -128, 127)
    _assert_zero_exact(scale, zp, -128, 127)
    with pytest.raises(ValueError, match=r"affine_qparams: range too wide for float32"):
        affine_qparams(torch.tensor(-FLOAT32_MAX), torch.tensor(FLOAT32_MAX), -128, 127)
    with pytest.raises(ValueError, match=r"symmetric_qparams: range too wide for float32"):
        symmetric_qparams(torch.tensor(-FLOAT32_MAX), torch.tensor(1.0), -128, 127)


def test_per_channel_shapes_and_python_floats():
    lo, hi = torch.tensor([-1.0, 0.0, 2.0, -4.0]), torch.tensor([1.0, 0.0, 3.0, -2.0])
    scale, zp = affine_qparams(lo, hi, -128, 127)
    assert scale.shape == zp.shape == (4,)
    for c in range(4):
        s_c, z_c = affine_qparams(lo[c], hi[c], -128, 127)
        assert scale[c] == s_c and zp[c] == z_c
    scale, zp = affine_qparams(-1.0, 1.0, -128, 127)
    assert scale.shape == () and zp.shape == ()


@settings(max_examples=200, deadline=None)
@given(finite_f32, finite_f32, st.sampled_from(GRIDS))
def test_symmetric_covers_amax_without_clipping(a, b, grid):
    lo, hi = _range_pair(a, b)
    qmin, qmax = grid
    try:
        scale, zp = symmetric_qparams(torch.tensor(lo), torch.tensor(hi), qmin, qmax)
    except ValueError as err:
        assert "range too wide for float32" in str(err)
        assert max(-lo, hi) > FLOAT32_MAX / 4
        return
    _assert_zero_exact(scale, zp, qmin, qmax)
    mid = (qmin + qmax + 1) // 2
    assert zp.item() == mid
    levels = min(qmax - mid, mid - qmin)
    amax = max(abs(Fraction(lo)), abs(Fraction(hi)))
    if amax == 0:
        assert scale.item() == 1.0
        return
    s = Fraction(scale.item())
    if amax / levels >= FLOAT32_TINY:
        assert abs(s - amax / levels) <= amax / levels * Fraction(1, 2**23)
    # ±amax quantize to at most `levels` steps from the zero point: nothing clips
    assert amax / s <= levels + Fraction(1, 2)


def test_symmetric_tflite_weight_scale_and_zero_points():
    scale, zp = symmetric_qparams(torch.tensor(-0.3), torch.tensor(0.9), -127, 127)
    assert scale.item() == np.float32(0.9 / 127) and zp.item() == 0
    scale, zp = symmetric_qparams(torch.tensor(-0.3), torch.tensor(0.9), -128, 127)
    assert scale.item() == np.float32(0.9 / 127) and zp.item() == 0
    assert symmetric_qparams(-1.0, 1.0, 0, 255)[1].item() == 128
    assert symmetric_qparams(-1.0, 1.0, 0, 254)[1].item() == 127
    assert symmetric_qparams(-1.0, 1.0, -8, 7)[0].item() == np.float32(1 / 7)


@pytest.mark.parametrize("fn", [affine_qparams, symmetric_qparams])
@pytest.mark.parametrize(
    "lo, hi, message",
    [
        (torch.tensor(float("nan")), torch.tensor(1.0), r"min_val must be finite, got nan"),
        (torch.tensor(0.0), torch.tensor(float("inf")), r"max_val must be finite, got inf"),
        (torch.tensor([0.0, -float("inf")]), torch.tensor([1.0, 1.0]),
         r"min_val must be finite, got -inf at index \(1,\)"),
        (torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]),
         r"min_val > max_val \(negative-width range\) at index \(1,\)"),
        (torch.tensor([0.0]), torch.tensor([1.0, 2.0]), r"must have one equal"),
        (torch.zeros(0), torch.zeros(0), r"non-empty"),
        (torch.zeros(2, 2), torch.ones(2, 2), r"0-d or non-empty 1-D"),
    ],
)
def test_bad_ranges_raise(fn, lo, hi, message):
    with pytest.raises(ValueError, match=fn.__name__ + ": .*" + message):
        fn(lo, hi, -128, 127)


@pytest.mark.parametrize("qmin, qmax", [(5, 5), (127, -128), (0.0, 255), (True, 3), (0, 2**31)])
def test_bad_grids_raise(qmin, qmax):
    with pytest.raises(ValueError, match=r"affine_qparams: (need int32 qmin < qmax|qm.. must be)"):
        affine_qparams(-1.0, 1.0, qmin, qmax)


@settings(max_examples=300, deadline=None)
@given(finite_f32, finite_f32, st.sampled_from(GRIDS), st.booleans())
def test_qparams_from_floats_equal_the_tensor_functions(a, b, grid, symmetric):
    lo, hi = _range_pair(a, b)
    fn = symmetric_qparams if symmetric else affine_qparams
    floats = qparams_from_floats(lo, hi, *grid, symmetric)
    try:
        scale, zp = fn(torch.tensor(lo), torch.tensor(hi), *grid)
    except ValueError:
        assert floats is None  # the tensor function raises where the float one declines
        return
    if floats is not None:
        assert floats == (scale.item(), zp.item())


@pytest.mark.parametrize(("lo", "hi"), [(1.0, -1.0), (math.nan, 1.0), (-math.inf, 0.0)])
def test_qparams_from_floats_decline_bad_ranges(lo, hi):
    assert qparams_from_floats(lo, hi, -128, 127, False) is None
    assert qparams_from_floats(-3e38, 3e38, 0, 1, False) is None  # the scale overflows float32
    assert qparams_from_floats(-1.0, 1.0, 0, 2**25, False) is None  # beyond exact float64 ends


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(finite_f32, finite_f32), min_size=1, max_size=6),
       st.sampled_from(GRIDS))
def test_symmetric_qparams_torch_equals_the_array_path(pairs, grid):
    lo = torch.tensor([min(a, b) for a, b in pairs])
    hi = torch.tensor([max(a, b) for a, b in pairs])
    fast = symmetric_qparams_torch(lo, hi, *grid)
    try:
        scale, zp = symmetric_qparams(lo, hi, *grid)
    except ValueError:
        assert fast is None
        return
    if fast is not None:
        assert torch.equal(fast[0], scale) and torch.equal(fast[1], zp)


@pytest.mark.parametrize(("lo", "hi"), [([1.0], [-1.0]), ([math.nan], [1.0]),
                                        ([-math.inf], [0.0]), ([-3.4e38], [3.4e38])])
def test_symmetric_qparams_torch_declines_what_the_array_path_must_decide(lo, hi):
    assert symmetric_qparams_torch(torch.tensor(lo), torch.tensor(hi), -128, 127) is None
