"""Rounding modes against exact Fraction references: ties, ±0, near-halves, huge values."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from intq.qmath import (
    round_half_away,
    round_half_away_np,
    round_half_even,
    round_half_even_np,
    round_stochastic,
)

from .refs import round_half_away as ref_away
from .refs import round_half_even as ref_even

EDGES = [0.0, -0.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 0.50000006,
         2.0**23 - 0.5, -(2.0**23) + 0.5, 2.0**24, 1e30, -1e30, 1e-40]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edges_torch_and_numpy(dtype):
    v = torch.tensor(EDGES, dtype=dtype)
    values = [Fraction(float(e)) for e in v.tolist()]
    want_even = [ref_even(f) for f in values]
    want_away = [ref_away(f) for f in values]
    assert [Fraction(e) for e in round_half_even(v).tolist()] == want_even
    assert [Fraction(e) for e in round_half_away(v).tolist()] == want_away
    assert [Fraction(e) for e in round_half_even_np(v.numpy()).tolist()] == want_even
    assert [Fraction(e) for e in round_half_away_np(v.numpy()).tolist()] == want_away


def test_ties_literal():
    v = torch.tensor([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])
    assert round_half_even(v).tolist() == [-2, -2, 0, 0, 2, 2]
    assert round_half_away(v).tolist() == [-3, -2, -1, 1, 2, 3]
    assert round_half_away(torch.tensor(0.49999997)).item() == 0  # floor(|v| + 0.5) says 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), min_size=1))
def test_random_float32(values):
    v = torch.tensor(values, dtype=torch.float32)
    exact = [Fraction(x) for x in v.tolist()]
    assert [Fraction(x) for x in round_half_even(v).tolist()] == [ref_even(f) for f in exact]
    assert [Fraction(x) for x in round_half_away(v).tolist()] == [ref_away(f) for f in exact]
    np.testing.assert_array_equal(round_half_away_np(v.numpy()), round_half_away(v).numpy())


def test_stochastic_rounds_to_a_neighbour_and_keeps_integers():
    v = torch.tensor([-1.75, -0.25, 0.0, 0.3, 2.0, 7.5] * 1000)
    r = round_stochastic(v, torch.Generator().manual_seed(0))
    assert torch.all((r == torch.floor(v)) | (r == torch.floor(v) + 1))
    integers = v == torch.floor(v)
    assert torch.equal(r[integers], v[integers])
