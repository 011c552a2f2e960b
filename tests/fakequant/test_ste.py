"""STE autograd: forward = qmath.fake_quantize; gradient identity inside the nudged range
(inclusive ends), zero outside; per channel on any axis; no gradient for scale/zero point."""

import numpy as np
import pytest
import torch

from intq.fakequant import (
    FakeQuantizeHalfAwaySTE,
    FakeQuantizeHalfEvenSTE,
    FakeQuantizeStochasticSTE,
    fake_quantize_ste,
)
from intq.qmath import fake_quantize


def _f32(value: float) -> float:
    return float(np.float32(value))


def _reference_mask(x, scale, zp, qmin, qmax, axis):
    """1 where float32((qmin - zp)·scale) <= x <= float32((qmax - zp)·scale), per element."""
    mask = torch.zeros_like(x)
    for index in np.ndindex(*x.shape):
        c = index[axis] if axis is not None else 0
        s, z = scale.reshape(-1)[c].item(), zp.reshape(-1)[c].item()
        lo, hi = _f32((qmin - z) * s), _f32((qmax - z) * s)
        mask[index] = float(lo <= x[index].item() <= hi)
    return mask


def _boundary_values(scale: float, zp: int, qmin: int, qmax: int) -> list[float]:
    lo, hi = _f32((qmin - zp) * scale), _f32((qmax - zp) * scale)
    below, above = np.nextafter(np.float32(lo), -np.inf), np.nextafter(np.float32(hi), np.inf)
    return [lo, hi, float(below), float(above), 0.0, lo * 3, hi * 3, (lo + hi) / 2]


@pytest.mark.parametrize("rounding", ["half_even", "half_away", "stochastic"])
def test_per_tensor_forward_and_gradient(rounding):
    scale, zp, qmin, qmax = torch.tensor(0.0371), torch.tensor(-5, dtype=torch.int32), -128, 127
    values = _boundary_values(scale.item(), zp.item(), qmin, qmax)
    x = torch.tensor(values + torch.randn(50, generator=torch.Generator().manual_seed(0)).mul(6)
                     .tolist(), requires_grad=True)
    gen = (lambda: torch.Generator().manual_seed(3)) if rounding == "stochastic" else lambda: None
    y = fake_quantize_ste(x, scale, zp, qmin, qmax, rounding=rounding, generator=gen())
    assert torch.equal(y, fake_quantize(x.detach(), scale, zp, qmin, qmax, rounding=rounding,
                                         generator=gen()))
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(y, x, upstream)
    mask = _reference_mask(x.detach(), scale, zp, qmin, qmax, None)
    assert torch.equal(grad, upstream * mask)
    assert mask[:4].tolist() == [1.0, 1.0, 0.0, 0.0]  # ends inclusive, one ulp outside excluded


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_per_channel_gradient_on_any_axis(axis):
    gen = torch.Generator().manual_seed(2)
    x = (torch.randn(3, 4, 5, generator=gen) * 4).requires_grad_()
    channels = x.shape[axis]
    scale = torch.rand(channels, generator=gen) * 0.05 + 0.005
    zp = torch.randint(-100, 100, (channels,), generator=gen, dtype=torch.int32)
    y = FakeQuantizeHalfEvenSTE.apply(x, scale, zp, -128, 127, axis)
    assert torch.equal(y, fake_quantize(x.detach(), scale, zp, -128, 127, axis))
    y.sum().backward()
    mask = _reference_mask(x.detach(), scale, zp, -128, 127, axis)
    assert torch.equal(x.grad, mask)
    assert 0 < mask.sum() < mask.numel()  # both regions are exercised


def test_functions_apply_directly_and_scale_gets_no_gradient():
    x = torch.linspace(-2, 2, 41, requires_grad=True)
    scale = torch.tensor(0.1, requires_grad=True)
    outputs = [
        FakeQuantizeHalfEvenSTE.apply(x, scale, 0, -8, 7),
        FakeQuantizeHalfAwaySTE.apply(x, scale, 0, -8, 7),
        FakeQuantizeStochasticSTE.apply(x, scale, 0, -8, 7, None, torch.Generator()),
    ]
    for y in outputs:
        grad_x, grad_scale = torch.autograd.grad(y.sum(), (x, scale), allow_unused=True)
        assert torch.equal(grad_x, ((x >= -0.8) & (x <= 0.7)).float())
        assert grad_scale is None


def test_stochastic_ste_is_reproducible():
    x = torch.linspace(-1, 1, 200)
    def run(seed):
        return fake_quantize_ste(x, torch.tensor(0.1), 0, -128, 127, rounding="stochastic",
                                 generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(5), run(5)) and not torch.equal(run(5), run(6))


def test_bad_arguments_raise():
    x = torch.ones(3)
    with pytest.raises(ValueError, match=r"fake_quantize_ste: rounding must be one of"):
        fake_quantize_ste(x, torch.tensor(0.1), 0, -128, 127, rounding="up")
    with pytest.raises(ValueError, match=r"generator only applies to rounding='stochastic'"):
        fake_quantize_ste(x, torch.tensor(0.1), 0, -128, 127, generator=torch.Generator())
    with pytest.raises(ValueError, match=r"fake_quantize: scale must be > 0"):
        fake_quantize_ste(x, torch.tensor(-0.1), 0, -128, 127)
    with pytest.raises(ValueError, match=r"fake_quantize: x must be finite, got nan"):
        fake_quantize_ste(torch.tensor([float("nan")]), torch.tensor(0.1), 0, -128, 127)
