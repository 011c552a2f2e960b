"""Quantizer(input_clamp=(a, b)) against a plain Quantizer fed F.hardtanh(x, a, b): the same
values, gradients, observer state and qparams, step after step, in every mode."""

import math

import pytest
import torch
import torch.nn.functional as F

from intq.fakequant import Quantizer, QuantSpec

EMA = QuantSpec(observer="ema", observer_options=(("decay", 0.9),))
CLAMPS = [(0.0, 6.0), (0.0, math.inf)]


def _batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 3, 5, 5, generator=gen) * (2 + 2 * i) for i in range(n)]


def _step(quantizer: Quantizer, x: torch.Tensor, clamp=None):
    x = x.clone().requires_grad_()
    y = quantizer(x if clamp is None else F.hardtanh(x, *clamp))
    y.backward(torch.arange(y.numel(), dtype=y.dtype).reshape(y.shape))
    return y.detach(), x.grad


def _pair(spec: QuantSpec, clamp, **kwargs) -> tuple[Quantizer, Quantizer]:
    return Quantizer(spec, input_clamp=clamp, **kwargs), Quantizer(spec, **kwargs)


def _assert_same(fused: Quantizer, plain: Quantizer, x: torch.Tensor, clamp) -> None:
    y, grad = _step(fused, x)
    expected, expected_grad = _step(plain, x, clamp)
    assert torch.equal(y, expected) and torch.equal(grad, expected_grad)
    fused_state, plain_state = fused.state_dict(), plain.state_dict()
    assert fused_state.keys() == plain_state.keys()
    assert all(torch.equal(fused_state[k], plain_state[k]) for k in plain_state)


@pytest.mark.parametrize("clamp", CLAMPS)
@pytest.mark.parametrize("current_ranges", [False, True])
def test_observing_ema_steps_match_the_unfused_quantizer(clamp, current_ranges):
    fused, plain = _pair(EMA, clamp, current_ranges=current_ranges)
    for x in _batches(4):
        _assert_same(fused, plain, x, clamp)


@pytest.mark.parametrize("observer", ["mse", "percentile", "minmax"])
def test_observers_that_need_values_see_the_clamped_tensor(observer):
    spec = QuantSpec(observer=observer)
    fused, plain = _pair(spec, (0.0, 6.0))
    for x in _batches(2):
        _assert_same(fused, plain, x, (0.0, 6.0))


@pytest.mark.parametrize("spec", [QuantSpec(rounding="half_away"),
                                  QuantSpec(per_channel=True, axis=1),
                                  QuantSpec(bits=16, observer="ema")])
def test_other_forms_clamp_first(spec):
    fused, plain = _pair(spec, (0.0, 6.0))
    for x in _batches(2):
        _assert_same(fused, plain, x, (0.0, 6.0))


def test_frozen_and_switched_off_quantizers_apply_the_clamp():
    fused, plain = _pair(EMA, (0.0, 6.0))
    x, later = _batches(2)
    _assert_same(fused, plain, x, (0.0, 6.0))
    fused.frozen = plain.frozen = True
    _assert_same(fused, plain, later, (0.0, 6.0))
    fused.fake_quant = plain.fake_quant = False
    y, grad = _step(fused, later)
    expected, expected_grad = _step(plain, later, (0.0, 6.0))
    assert torch.equal(y, F.hardtanh(later, 0.0, 6.0))
    assert torch.equal(y, expected) and torch.equal(grad, expected_grad)


def test_infinities_are_clamped_and_nan_is_refused():
    fused, plain = _pair(EMA, (0.0, 6.0))
    x = _batches(1)[0]
    x[0, 0, 0, :2] = torch.tensor([math.inf, -math.inf])
    _assert_same(fused, plain, x, (0.0, 6.0))
    x[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        fused(x)
    fused.frozen = True
    with pytest.raises(ValueError, match="must be finite, got nan"):
        fused(x)


def test_input_clamp_is_validated_and_shown():
    with pytest.raises(ValueError, match="input_clamp"):
        Quantizer(EMA, input_clamp=(1.0, 6.0))
    quantizer = Quantizer(EMA, input_clamp=(0, 6))
    assert quantizer.input_clamp == (0.0, 6.0) and "input_clamp=(0.0, 6.0)" in repr(quantizer)
    quantizer.input_clamp = None
    assert "input_clamp" not in repr(quantizer)
