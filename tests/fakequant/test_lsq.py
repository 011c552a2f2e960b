"""LSQ extension: forward = fake_quantize, STE for x, LSQ scale gradient vs a float64 reference."""

import math

import numpy as np
import pytest
import torch

from intq.fakequant import fake_quantize_lsq, lsq_grad_factor
from intq.qmath import fake_quantize


def _reference_scale_grad(x, upstream, scale, zp, qmin, qmax, factor):
    """Σ upstream·∂x̂/∂Δ (float64): round(v) - v inside, qmin - z below, qmax - z above."""
    total = 0.0
    lo, hi = float(np.float32((qmin - zp) * scale)), float(np.float32((qmax - zp) * scale))
    for xi, gi in zip(x.tolist(), upstream.tolist(), strict=True):
        v = float(np.float32(xi) / np.float32(scale))
        if xi < lo:
            d = qmin - zp
        elif xi > hi:
            d = qmax - zp
        else:
            d = round(v) - v
        total += gi * d
    return total * factor


@pytest.mark.parametrize("zp", [0, -20])
def test_per_tensor_gradients(zp):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(300, generator=gen) * 2).requires_grad_()
    scale = torch.tensor(0.02, requires_grad=True)
    y = fake_quantize_lsq(x, scale, zp, -128, 127)
    assert torch.equal(y, fake_quantize(x.detach(), scale.detach(), zp, -128, 127))
    upstream = torch.randn(300, generator=gen)
    grad_x, grad_scale = torch.autograd.grad(y, (x, scale), upstream)
    lo, hi = (-128 - zp) * 0.02, (127 - zp) * 0.02
    inside = ((x >= np.float32(lo)) & (x <= np.float32(hi))).float()
    assert torch.equal(grad_x, upstream * inside)
    factor = 1 / math.sqrt(300 * (127 - zp))
    assert lsq_grad_factor(x, scale, zp, 127) == pytest.approx(factor)
    want = _reference_scale_grad(x.detach(), upstream, 0.02, zp, -128, 127, factor)
    assert grad_scale.item() == pytest.approx(want, rel=1e-4, abs=1e-6)


def test_per_channel_scale_gradient_sums_over_other_axes():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 6, generator=gen).requires_grad_()
    scale = torch.tensor([0.01, 0.05, 0.1, 0.3], requires_grad=True)
    y = fake_quantize_lsq(x, scale, 0, -8, 7, axis=0, grad_factor=1.0)
    y.sum().backward()
    for c in range(4):
        want = _reference_scale_grad(x[c].detach(), torch.ones(6), scale[c].item(), 0, -8, 7, 1.0)
        assert scale.grad[c].item() == pytest.approx(want, rel=1e-5, abs=1e-6)


def test_learning_the_scale_reduces_error_of_a_too_wide_grid():
    x = torch.randn(500, generator=torch.Generator().manual_seed(2))
    scale = torch.tensor(1.0, requires_grad=True)  # 4-bit grid far wider than the data
    optimizer = torch.optim.SGD([scale], lr=1.0)
    def error():
        return (fake_quantize_lsq(x, scale, 0, -8, 7, grad_factor=1.0) - x).square().mean()
    start = error().item()
    for _ in range(25):
        optimizer.zero_grad()
        error().backward()
        optimizer.step()
    assert error().item() < start / 4
