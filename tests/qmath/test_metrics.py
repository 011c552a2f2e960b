"""sqnr_db, mse, max_abs_error against Fraction references; degenerate and bad inputs."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from intq.qmath import max_abs_error, mse, sqnr_db

dyadics = st.integers(-(10**6), 10**6).map(lambda k: k / 1024)  # exact, no float underflow


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(dyadics, dyadics), min_size=1, max_size=40))
def test_metrics_match_exact_sums(pairs):
    ref, app = (np.array(column) for column in zip(*pairs, strict=True))
    signal = sum(Fraction(r) ** 2 for r in ref.tolist())
    noise = sum((Fraction(r) - Fraction(a)) ** 2 for r, a in pairs)
    assert mse(ref, app) == pytest.approx(float(noise / len(pairs)), rel=1e-12, abs=1e-300)
    assert max_abs_error(ref, app) == max(abs(r - a) for r, a in pairs)
    got = sqnr_db(ref, app)
    if noise == 0:
        assert got == math.inf
    elif signal == 0:
        assert got == -math.inf
    else:
        want = 10 * (math.log10(signal.numerator) - math.log10(signal.denominator)
                     - math.log10(noise.numerator) + math.log10(noise.denominator))
        assert got == pytest.approx(want, abs=1e-9)


def test_known_values_and_torch_inputs():
    ref, app = torch.tensor([1.0, -2.0]), torch.tensor([1.0, -2.1], dtype=torch.float64)
    assert sqnr_db(ref, app) == pytest.approx(10 * math.log10(5 / 0.01), abs=1e-9)
    assert sqnr_db(ref, ref) == math.inf
    assert sqnr_db(np.zeros(3), np.zeros(3)) == math.inf
    assert sqnr_db(np.zeros(3), np.ones(3)) == -math.inf
    weights = torch.randn(8, 8, requires_grad=True)
    assert sqnr_db(weights, weights * 1.001) == pytest.approx(60.0, abs=1e-3)


@pytest.mark.parametrize("fn", [sqnr_db, mse, max_abs_error])
def test_bad_input_raises(fn):
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"{name}: reference shape \(2,\) != approx shape \(3,\)"):
        fn(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=rf"{name}: inputs are empty"):
        fn(np.zeros(0), np.zeros(0))
    with pytest.raises(ValueError, match=rf"{name}: approx must be finite, got nan at index"):
        fn(np.zeros(2), np.array([0.0, np.nan]))
