"""quantize_* / dequantize / fake_quantize (torch and numpy) against exact references."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from intq.qmath import (
    dequantize,
    dequantize_np,
    fake_quantize,
    qrange,
    quantize_half_away,
    quantize_half_away_np,
    quantize_half_even,
    quantize_half_even_np,
    quantize_stochastic,
)

from .refs import quantize_ref

GRIDS = sorted(
    {qrange(b, s, n) for b in (2, 4, 8, 16) for s in (True, False) for n in (False, True)}
)
QUANTIZERS = {"half_even": quantize_half_even, "half_away": quantize_half_away}
NP_QUANTIZERS = {"half_even": quantize_half_even_np, "half_away": quantize_half_away_np}


@st.composite
def grid_and_qparams(draw):
    qmin, qmax = draw(st.sampled_from(GRIDS))
    scale = draw(st.one_of(
        st.floats(1e-4, 1e3).map(lambda f: float(np.float32(f))),
        st.integers(-12, 4).map(lambda e: 2.0**e),  # powers of two make exact ties
    ))
    return qmin, qmax, scale, draw(st.integers(qmin, qmax))


def _x_values(scale):
    near_grid = st.integers(-70000, 70000).map(lambda k: float(np.float32(k * scale / 2)))
    return st.lists(st.one_of(near_grid, st.floats(-1e6, 1e6, width=32)), min_size=1, max_size=20)


@settings(max_examples=120, deadline=None)
@given(st.data(), grid_and_qparams(), st.sampled_from(["half_even", "half_away"]))
def test_quantize_matches_fraction_reference(data, params, mode):
    qmin, qmax, scale, zp = params
    xs = data.draw(_x_values(scale))
    x = torch.tensor(xs, dtype=torch.float32)
    q = QUANTIZERS[mode](x, torch.tensor(scale), torch.tensor(zp), qmin, qmax)
    assert q.dtype == torch.int32
    want = [quantize_ref(v, scale, zp, qmin, qmax, mode) for v in x.tolist()]
    assert q.tolist() == want
    q_np = NP_QUANTIZERS[mode](x.numpy(), np.float32(scale), zp, qmin, qmax)
    assert q_np.dtype == np.int64 and q_np.tolist() == want


@settings(max_examples=120, deadline=None)
@given(st.data(), grid_and_qparams(), st.sampled_from(["half_even", "half_away", "stochastic"]))
def test_dequantize_exact_and_quantize_dequantize_idempotent(data, params, mode):
    qmin, qmax, scale, zp = params
    scale_t, zp_t = torch.tensor(scale), torch.tensor(zp, dtype=torch.int32)
    x = torch.tensor(data.draw(_x_values(scale)), dtype=torch.float32)
    gen = torch.Generator().manual_seed(1) if mode == "stochastic" else None
    q = (quantize_stochastic(x, scale_t, zp_t, qmin, qmax, generator=gen) if gen is not None
         else QUANTIZERS[mode](x, scale_t, zp_t, qmin, qmax))
    x_hat = dequantize(q, scale_t, zp_t)
    exact = [(qi - zp) * Fraction(scale) for qi in q.tolist()]
    assert [Fraction(v) for v in dequantize_np(q.numpy(), np.float32(scale), zp).tolist()] == exact
    assert x_hat.tolist() == [float(np.float32(v)) for v in exact]
    for mode_again, quantize in QUANTIZERS.items():  # grid points are fixed points of quantize
        assert torch.equal(quantize(x_hat, scale_t, zp_t, qmin, qmax), q), mode_again
    fq = fake_quantize(x, scale_t, zp_t, qmin, qmax, rounding=mode,
                       generator=None if gen is None else torch.Generator().manual_seed(1))
    assert torch.equal(fq, x_hat)
    assert torch.equal(fake_quantize(fq, scale_t, zp_t, qmin, qmax), fq)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_per_channel_any_axis(axis):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 5, generator=gen) * 3
    channels = x.shape[axis]
    scale = torch.rand(channels, generator=gen) * 0.1 + 0.01
    zp = torch.randint(-20, 20, (channels,), generator=gen, dtype=torch.int32)
    q = quantize_half_even(x, scale, zp, -128, 127, axis=axis)
    for index in np.ndindex(*x.shape):
        c = index[axis]
        want = quantize_ref(x[index].item(), scale[c].item(), zp[c].item(), -128, 127, "half_even")
        assert q[index].item() == want
    np.testing.assert_array_equal(
        quantize_half_even_np(x.numpy(), scale.numpy(), zp.numpy(), -128, 127, axis=axis), q)
    x_hat = dequantize(q, scale, zp, axis=axis)
    np.testing.assert_array_equal(
        dequantize_np(q.numpy(), scale.numpy(), zp.numpy(), axis=axis).astype(np.float32), x_hat)
    assert torch.equal(fake_quantize(x, scale, zp, -128, 127, axis=axis), x_hat)


def test_ties_saturation_and_signed_zero():
    half = torch.tensor(0.5)
    x = torch.tensor([-1.25, -0.25, -0.0, 0.25, 0.75, 100.0, -100.0])  # x / 0.5: ties, ±0
    assert quantize_half_even(x, half, 1, -4, 3).tolist() == [-1, 1, 1, 1, 3, 3, -4]
    assert quantize_half_away(x, half, 1, -4, 3).tolist() == [-2, 0, 1, 2, 3, 3, -4]
    assert fake_quantize(x, half, 1, -4, 3).tolist() == [-1.0, 0.0, 0.0, 0.0, 1.0, 1.0, -2.5]


def test_stochastic_unbiased_in_expectation():
    """Mean of N draws is within 6 standard errors (σ <= 1/2 per draw) of x/scale + zp."""
    n, scale, zp = 200_000, 0.25, 3
    gen = torch.Generator().manual_seed(1234)
    for v in (0.3, -1.7, 2.5, 0.01, -0.99):
        x = torch.full((n,), v * scale)
        q = quantize_stochastic(x, torch.tensor(scale), zp, -128, 127, generator=gen).double()
        want = Fraction(float(np.float32(v * scale)) / scale) + zp
        assert abs(q.mean().item() - float(want)) < 6 * 0.5 / n**0.5


def test_stochastic_reproducible_with_seed():
    x = torch.linspace(-3, 3, 1000)
    def draw(seed):
        return quantize_stochastic(x, torch.tensor(0.1), 0, -128, 127,
                                   generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(7), draw(7))
    assert not torch.equal(draw(7), draw(8))
    fq = fake_quantize(x, torch.tensor(0.1), 0, -128, 127, rounding="stochastic",
                       generator=torch.Generator().manual_seed(7))
    assert torch.equal(fq, dequantize(draw(7), torch.tensor(0.1), 0))


def test_empty_input_gives_empty_output():
    q = quantize_half_even(torch.zeros(0, 3), torch.ones(3), torch.zeros(3), -128, 127, axis=1)
    assert q.shape == (0, 3) and q.dtype == torch.int32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x": torch.tensor([1.0, float("nan")])}, r"x must be finite, got nan at index \(1,\)"),
        ({"x": torch.tensor([float("inf")])}, r"x must be finite, got inf"),
        ({"x": torch.tensor([1, 2])}, r"x must be a float tensor"),
        ({"scale": torch.tensor(-0.5)}, r"scale must be > 0, got -0.5"),
        ({"scale": torch.tensor([0.1, 0.0]), "zero_point": torch.zeros(2), "axis": 0},
         r"scale must be > 0, got 0.0 at index \(1,\)"),
        ({"scale": torch.tensor(float("nan"))}, r"scale must be finite"),
        ({"scale": torch.tensor(1)}, r"scale must be a float tensor"),
        ({"zero_point": 128}, r"zero_point must be an integer in \[-128, 127\], got 128"),
        ({"zero_point": 0.5}, r"zero_point must be an integer"),
        ({"scale": torch.tensor([0.1, 0.2]), "zero_point": torch.zeros(2)}, r"2 scales need axis="),
        ({"scale": torch.tensor([0.1, 0.2, 0.3]), "zero_point": torch.zeros(3), "axis": 0},
         r"3 scales for axis 0 of size 2"),
        ({"scale": torch.tensor([0.1, 0.2]), "zero_point": torch.zeros(2), "axis": 2},
         r"axis must be an int in \[-2, 1\]"),
        ({"scale": torch.tensor([0.1, 0.2]), "zero_point": torch.zeros(3), "axis": 0},
         r"zero_point shape \(3,\) does not match scale shape \(2,\)"),
        ({"qmin": 127, "qmax": -128}, r"need int32 qmin < qmax"),
        ({"rounding": "nearest"}, r"rounding must be one of"),
        ({"generator": torch.Generator()}, r"generator only applies to rounding='stochastic'"),
    ],
)
def test_bad_input_raises(kwargs, message):
    args = {"x": torch.ones(2, 2), "scale": torch.tensor(0.1), "zero_point": 0,
            "qmin": -128, "qmax": 127} | kwargs
    with pytest.raises(ValueError, match="fake_quantize: " + message):
        fake_quantize(**args)


def test_numpy_bad_input_raises():
    with pytest.raises(ValueError, match=r"quantize_half_even_np: x must be finite, got nan"):
        quantize_half_even_np(np.array([np.nan]), 1.0, 0, -128, 127)
    with pytest.raises(ValueError, match=r"quantize_half_away_np: scale must be > 0"):
        quantize_half_away_np(np.array([1.0]), np.float32(-1.0), 0, -128, 127)
    with pytest.raises(ValueError, match=r"dequantize_np: scale must be a float"):
        dequantize_np(np.array([1]), 1, 0)
