"""Requantization multipliers equal what ONNX Runtime and TFLite derive from the scales,
recomputed here from the definitions with Python floats/fractions."""

import math
from fractions import Fraction

import numpy as np
import pytest

from intq.convert import add_requant, avgpool_requant, conv_requant, global_avgpool_requant

f32 = np.float32


def _m0_shift(real: float) -> tuple[int, int]:
    """TFLite QuantizeMultiplier from its definition: real = q·2^shift, q in [1/2, 1),
    m0 = round_half_away(q·2^31) with carry."""
    q, shift = math.frexp(real)
    m0 = math.floor(Fraction(q) * 2**31 + Fraction(1, 2))
    return (2**30, shift + 1) if m0 == 2**31 else (m0, shift)


@pytest.mark.parametrize("seed", range(5))
def test_conv_requant_matches_ort_and_tflite_formulas(seed):
    rng = np.random.default_rng(seed)
    s_in, s_out = (float(f32(v)) for v in np.exp(rng.uniform(-6, 0, 2)))
    s_w = np.exp(rng.uniform(-8, -2, 7)).astype(f32)
    r = conv_requant(s_in, s_w, s_out)
    for c, w in enumerate(s_w):
        assert r.multiplier_f32[c] == f32(f32(s_in) * w) / f32(s_out)
        assert (int(r.m0[c]), int(r.shift[c])) == _m0_shift(s_in * float(w) / s_out)


def test_pool_requants():
    r = avgpool_requant(0.1, 9, 0.05)
    assert r.multiplier_f32[0] == f32(f32(0.1) * f32(1 / 9)) / f32(0.05)
    g = global_avgpool_requant(0.1, 49, 0.05)
    assert g.multiplier_f32[0] == f32(0.1) / (f32(0.05) * f32(49))
    m0, shift = _m0_shift(float(f32(0.1)) / float(f32(0.05)))  # TFLite MEAN: S_in / S_out,
    assert (int(g.m0[0]), int(g.shift[0])) == ((m0 << 5) // 49, shift - 5)  # then 1/49 in ints


def test_add_requant_matches_tflite_prepare():
    sa, sb, sy = (float(f32(v)) for v in (0.031, 0.017, 0.05))
    r = add_requant(sa, sb, sy)
    twice_max = 2 * max(sa, sb)
    assert r.left_shift == 20
    assert (r.m0_a, r.shift_a) == _m0_shift(sa / twice_max)
    assert (r.m0_b, r.shift_b) == _m0_shift(sb / twice_max)
    assert (r.m0_out, r.shift_out) == _m0_shift(twice_max / (2**20 * sy))
    assert r.multiplier_a_f32 == f32(sa) / f32(sy) and r.multiplier_b_f32 == f32(sb) / f32(sy)
    assert add_requant(sa, sb, sy, bits=16).left_shift == 15


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_requant_rejects_bad_scales(bad):
    with pytest.raises(ValueError, match="positive finite"):
        conv_requant(bad, [0.1], 0.1)
    with pytest.raises(ValueError):
        add_requant(0.1, bad, 0.1)
