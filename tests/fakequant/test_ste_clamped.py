"""fake_quantize_half_even_clamped_ste against a numpy float32 reference: equal values and the
STE gradient 1{lo <= x <= hi}, per tensor (Python-float grid) and per channel, on ties, grid
ends and their float32 neighbours, signed zeros and subnormals; also with subnormals flushed."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from intq.fakequant import fake_quantize_half_even_clamped_ste, fake_quantize_ste
from intq.fakequant.ste import check_input_clamp

# (qmin, qmax, zero point, scale): affine with lo = 0, affine, signed, symmetric, 16 and 4 bits
GRIDS = [(0, 255, 0, 0.0234), (0, 255, 37, 0.0191), (-128, 127, -5, 0.0371),
         (-127, 127, 0, 0.0078), (0, 65535, 1201, 3.1e-4), (-8, 7, 2, 0.37)]


def _f32(value: float) -> np.float32:
    return np.float32(value)


def _grid_ends(scale: float, zp: int, qmin: int, qmax: int) -> tuple[float, float]:
    return float(_f32((qmin - zp) * scale)), float(_f32((qmax - zp) * scale))


def _reference(x: np.ndarray, scale: float, zp: int, qmin: int, qmax: int):
    """(x̂, mask) in numpy float32: (clip(rint(x / s) + z, qmin, qmax) - z)·s, lo <= x <= hi."""
    s = _f32(scale)
    q = np.clip(np.rint(x / s) + np.float32(zp), qmin, qmax)
    lo, hi = _grid_ends(scale, zp, qmin, qmax)
    return ((q - np.float32(zp)) * s).astype(np.float32), ((x >= lo) & (x <= hi)).astype(np.float32)


def _values(scale: float, zp: int, qmin: int, qmax: int, n: int = 400) -> np.ndarray:
    """Ties (k + 1/2)·s, grid ends and their float32 neighbours, zeros, subnormals, random."""
    lo, hi = _grid_ends(scale, zp, qmin, qmax)
    rng = np.random.default_rng(abs(qmin) + qmax + zp)
    k = rng.integers(qmin - zp - 3, qmax - zp + 3, n)
    ties = ((k + 0.5) * _f32(scale)).astype(np.float32)
    ends = np.array([lo, hi, np.nextafter(_f32(lo), -np.inf), np.nextafter(_f32(hi), np.inf),
                     np.nextafter(_f32(lo), np.inf), np.nextafter(_f32(hi), -np.inf),
                     0.0, -0.0, 1e-45, -1e-45, 3 * lo - 1, 3 * hi + 1], dtype=np.float32)
    spread = (rng.standard_normal(n) * (hi - lo)).astype(np.float32)
    return np.concatenate([ties, ends, spread])


def _grad(fn, x: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_()
    out = fn(x, *args)
    out.backward(torch.ones_like(out))
    return out.detach(), x.grad


@pytest.mark.parametrize(("qmin", "qmax", "zp", "scale"), GRIDS)
def test_per_tensor_equals_the_reference(qmin, qmax, zp, scale):
    x = _values(scale, zp, qmin, qmax)
    lo, hi = _grid_ends(scale, zp, qmin, qmax)
    out, grad = _grad(fake_quantize_half_even_clamped_ste, torch.from_numpy(x),
                      float(_f32(scale)), lo, hi)
    expected, mask = _reference(x, scale, zp, qmin, qmax)
    assert torch.equal(out, torch.from_numpy(expected))  # == : a zero may come out as -0.0
    assert torch.equal(grad, torch.from_numpy(mask))


def test_per_channel_equals_the_reference_and_fake_quantize_ste():
    qmin, qmax = -128, 127
    columns, scales, zps = [], [], []
    for _, _, zp, scale in GRIDS[:4]:
        columns.append(_values(scale, zp, qmin, qmax, n=100)[:200])
        scales.append(float(_f32(scale)))
        zps.append(zp)
    x = torch.from_numpy(np.stack(columns, axis=1))  # (200, 4), channels on axis 1
    scale = torch.tensor(scales)
    zero_point = torch.tensor(zps, dtype=torch.int32)
    lo = ((qmin - zero_point.float()) * scale).reshape(1, -1)
    hi = ((qmax - zero_point.float()) * scale).reshape(1, -1)
    out, grad = _grad(fake_quantize_half_even_clamped_ste, x, scale.reshape(1, -1), lo, hi)
    for c in range(4):
        expected, mask = _reference(x[:, c].numpy(), scales[c], zps[c], qmin, qmax)
        assert torch.equal(out[:, c], torch.from_numpy(expected))
        assert torch.equal(grad[:, c], torch.from_numpy(mask))
    general, general_grad = _grad(fake_quantize_ste, x, scale, zero_point, qmin, qmax, 1)
    assert torch.equal(out, general) and torch.equal(grad, general_grad)


def test_no_gradient_needed_saves_nothing_and_gives_the_same_values():
    qmin, qmax, zp, scale = GRIDS[1]
    x = torch.from_numpy(_values(scale, zp, qmin, qmax))
    args = (float(_f32(scale)), *_grid_ends(scale, zp, qmin, qmax))
    assert torch.equal(fake_quantize_half_even_clamped_ste(x, *args),
                       _grad(fake_quantize_half_even_clamped_ste, x, *args)[0])


def test_gradient_at_zero_survives_flushed_subnormals():
    qmin, qmax, zp, scale = GRIDS[0]  # lo = 0: the open range's lower end is subnormal
    x = torch.tensor([-1.0, -0.0, 0.0, 0.5, 6.0])
    args = (float(_f32(scale)), *_grid_ends(scale, zp, qmin, qmax))
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    try:
        _, grad = _grad(fake_quantize_half_even_clamped_ste, x, *args)
    finally:
        torch.set_flush_denormal(False)
    assert grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("clamp", [(0.0, 6.0), (0.0, float("inf")), (-1.5, 0.5)])
@pytest.mark.parametrize(("qmin", "qmax", "zp", "scale"), GRIDS)
def test_input_clamp_equals_hardtanh_then_fake_quantize_ste(qmin, qmax, zp, scale, clamp):
    x = _values(scale, zp, qmin, qmax)
    edges = np.array([clamp[0], clamp[1], np.nextafter(_f32(clamp[0]), -np.inf),
                      np.nextafter(_f32(clamp[0]), np.inf), np.nextafter(_f32(clamp[1]), -np.inf),
                      np.inf, -np.inf], dtype=np.float32)
    x = torch.from_numpy(np.concatenate([x, edges, 4 * x]))
    scale = float(_f32(scale))  # the grid ends of fake_quantize_ste's float32 scale
    args = (scale, *_grid_ends(scale, zp, qmin, qmax))
    out, grad = _grad(fake_quantize_half_even_clamped_ste, x, *args, clamp)

    def unfused(t):  # hardtanh's gradient: a < x < b; fake_quantize_ste's on its output
        return fake_quantize_ste(F.hardtanh(t, *clamp), torch.tensor(args[0]), zp, qmin, qmax)

    finite = torch.isfinite(x) | torch.isfinite(torch.tensor(clamp)).all()
    expected, expected_grad = _grad(unfused, x[finite])
    assert torch.equal(out[finite], expected) and torch.equal(grad[finite], expected_grad)
    if clamp[1] == float("inf"):  # +inf is clamped by the grid end instead
        assert set(out[x == np.inf].tolist()) == {args[2]}


def test_input_clamp_with_tensor_grid_clamps_first():
    x = torch.tensor([[-1.0, 0.0, 0.3, 7.0]]).T
    scale, lo, hi = torch.tensor([[0.5]]), torch.tensor([[-2.0]]), torch.tensor([[6.5]])
    out, grad = _grad(fake_quantize_half_even_clamped_ste, x, scale, lo, hi, (0.0, 6.0))
    assert out.flatten().tolist() == [0.0, 0.0, 0.5, 6.0]
    assert grad.flatten().tolist() == [0.0, 0.0, 1.0, 0.0]


@pytest.mark.parametrize("clamp", [(0.5, 6.0), (-1.0, -0.5), (1.0, 1.0), (0.0, float("nan"))])
def test_input_clamp_must_hold_zero(clamp):
    with pytest.raises(ValueError, match="input_clamp"):
        check_input_clamp(clamp)
