"""Quantizer: observe/fake_quant/frozen switches, lazy qparams, errors, state_dict round trip."""

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import intq.observers
from intq.fakequant import Quantizer, QuantSpec, activation_spec, weight_spec
from intq.qmath import affine_qparams, fake_quantize, nudged_range, symmetric_qparams

from .local_observer import LocalMinMaxObserver

ACT = QuantSpec()
W_SYM = QuantSpec(symmetric=True, narrow_range=True, per_channel=True, axis=0)


def _local(spec: QuantSpec, **kwargs) -> Quantizer:
    observer = LocalMinMaxObserver(per_channel=spec.per_channel, axis=spec.axis)
    return Quantizer(spec, observer, **kwargs)


def _batches(n: int, shape=(4, 3, 5), seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=gen) * (i + 1) for i in range(n)]


def test_observes_running_range_and_fake_quantizes_with_its_qparams():
    quantizer = _local(ACT)
    batches = _batches(3)
    for i, x in enumerate(batches):
        y = quantizer(x)
        seen = torch.stack(batches[: i + 1])
        scale, zp = affine_qparams(seen.min(), seen.max(), -128, 127)
        assert torch.equal(quantizer.scale, scale) and torch.equal(quantizer.zero_point, zp)
        assert torch.equal(quantizer.min_val, seen.min()) and torch.equal(quantizer.max_val,
                                                                           seen.max())
        assert torch.equal(y, fake_quantize(x, scale, zp, -128, 127))


def test_per_channel_symmetric_weights():
    quantizer = _local(W_SYM)
    w = _batches(1, shape=(6, 2, 3, 3))[0] * torch.logspace(-3, 1, 6).reshape(6, 1, 1, 1)
    y = quantizer(w)
    amax = w.abs().amax(dim=(1, 2, 3))
    scale, zp = symmetric_qparams(-amax, amax, -127, 127)
    assert torch.equal(quantizer.scale, scale)
    assert torch.equal(quantizer.zero_point, torch.zeros(6, dtype=torch.int32))
    assert torch.equal(y, fake_quantize(w, scale, zp, -127, 127, axis=0))


def test_switches():
    quantizer = _local(ACT)
    x1, x2, x3 = _batches(3)
    quantizer(x1)
    scale1 = quantizer.scale.clone()
    quantizer.fake_quant = False
    assert quantizer(x2) is x2                               # identity, but x2 was observed
    assert quantizer.observer.max_val.item() == max(x1.max(), x2.max())
    quantizer.observe = False
    quantizer(x3 * 10)                                       # not observed
    assert quantizer.observer.max_val.item() == max(x1.max(), x2.max())
    quantizer.frozen = True                                  # freezing computes pending qparams
    frozen_scale = quantizer.scale.clone()
    assert not torch.equal(frozen_scale, scale1)
    quantizer.observe, quantizer.fake_quant = True, True
    before = quantizer.observer.max_val.clone()
    y = quantizer(x3 * 100)                                  # frozen: no update, same qparams
    assert torch.equal(quantizer.observer.max_val, before)
    assert torch.equal(quantizer.scale, frozen_scale)
    assert torch.equal(y, fake_quantize(x3 * 100, frozen_scale, quantizer.zero_point, -128, 127))
    assert torch.equal(quantizer.calculate_qparams()[0], frozen_scale)


def test_qparams_are_computed_lazily_once_per_new_data():
    quantizer = _local(ACT, fake_quant=False)
    for x in _batches(5):
        quantizer(x)
    assert quantizer.observer.ranges_calls == 0 and not quantizer.has_qparams
    quantizer.fake_quant = True
    quantizer.observe = False
    for x in _batches(3):
        quantizer(x)
    assert quantizer.observer.ranges_calls == 1


def test_merge_folds_observations_and_marks_qparams_stale():
    a, b = Quantizer(ACT), Quantizer(ACT)
    x1, x2 = _batches(2)
    a(x1)
    b(x2)
    a.merge(b)
    both = torch.stack([x1, x2])
    assert torch.equal(a.calculate_qparams()[0], affine_qparams(both.min(), both.max(), -128,
                                                                127)[0])
    with pytest.raises(ValueError, match=r"can only merge a Quantizer with the same spec"):
        a.merge(Quantizer(W_SYM))


def test_current_ranges_track_only_the_latest_tensor():
    quantizer = _local(W_SYM, current_ranges=True)
    big, small = _batches(1, (3, 4))[0] * 100, _batches(1, (3, 4), seed=1)[0]
    quantizer(big)
    quantizer(small)
    assert torch.equal(quantizer.max_val, small.amax(dim=1))


def test_gradient_passes_straight_through_the_module():
    quantizer = _local(ACT)
    quantizer(torch.tensor([-1.0, 1.0]))
    x = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], requires_grad=True)
    quantizer.observe = False
    quantizer(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_stochastic_rounding_uses_the_generator():
    spec = QuantSpec(rounding="stochastic")
    outputs = []
    for _ in range(2):
        quantizer = _local(spec, generator=torch.Generator().manual_seed(9))
        outputs.append(quantizer(torch.linspace(-1, 1, 300)))
    assert torch.equal(*outputs)


def test_errors():
    with pytest.raises(ValueError, match=r"Quantizer\(int8 asym per-tensor minmax half_even\): "
                                         r"fake_quant is on but it has observed no data yet"):
        _local(ACT, observe=False)(torch.ones(3))
    quantizer = _local(ACT, observe=False)
    quantizer.frozen = True
    with pytest.raises(ValueError, match=r"fake_quant is on but it is frozen without qparams"):
        quantizer(torch.ones(3))
    with pytest.raises(ValueError, match=r"frozen without qparams"):
        quantizer.calculate_qparams()
    with pytest.raises(ValueError, match=r"cannot observe an empty tensor of shape \(0, 3\)"):
        _local(ACT)(torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"must be finite"):
        _local(ACT)(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match=r"Quantizer: spec must be a QuantSpec, got dict"):
        Quantizer({"bits": 8})


@pytest.mark.parametrize("spec", [ACT, W_SYM])
def test_state_dict_round_trip(spec):
    source = _local(spec, fake_quant=False)
    for x in _batches(3):
        source(x)                        # observed only: state_dict computes the qparams
    source.frozen = True
    state = source.state_dict()
    assert state["scale"].numel() == (4 if spec.per_channel else 1)
    target = _local(spec)
    target.load_state_dict(state)
    for name, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], value), name
    assert (target.observe, target.fake_quant, target.frozen) == (True, False, True)
    source.fake_quant = target.fake_quant = True
    x = _batches(1, seed=7)[0]
    assert torch.equal(target(x), source(x))


def test_state_dict_round_trip_through_safetensors_with_real_observers():
    source = Quantizer(weight_spec("asym-per-channel", 4))
    source(_batches(1, shape=(8, 3, 3, 3))[0])
    state = load_safetensors(save_safetensors(source.state_dict()))
    target = Quantizer(weight_spec("asym-per-channel", 4))
    target.load_state_dict(state)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in source.state_dict().items())


def test_default_observer_comes_from_intq_observers(monkeypatch):
    calls = []
    def fake_make_observer(kind, **kwargs):
        calls.append((kind, kwargs))
        return LocalMinMaxObserver()
    monkeypatch.setattr(intq.observers, "make_observer", fake_make_observer)
    Quantizer(QuantSpec(bits=6, symmetric=True, per_channel=True, axis=1, observer="ema",
                        observer_options={"decay": 0.9}))
    assert calls == [("ema", {"per_channel": True, "axis": 1, "bits": 6, "symmetric": True,
                              "decay": 0.9})]


def test_extra_repr():
    quantizer = _local(ACT)
    assert "no qparams" in repr(quantizer)
    quantizer(torch.tensor([-1.0, 3.0]))
    text = quantizer.extra_repr()
    assert text.startswith("int8 asym per-tensor minmax half_even, observe=True, fake_quant=True, "
                           "frozen=False, scale=0.0156")
    assert text.endswith("zero_point=-64")


def test_observe_summary_feeds_the_observer_only_while_observing():
    q = Quantizer(activation_spec(observer="minmax"))
    q.observe, q.fake_quant = True, False
    q.eval()
    q.observe_in_eval = False
    q.observe_summary(torch.tensor([-1.0]), torch.tensor([2.0]), None, 0)
    assert not q.observer.has_data
    q.train()
    q.observe_summary(torch.tensor([-1.0]), torch.tensor([2.0]), None, 0)
    q.observe_summary(torch.tensor([-3.0]), torch.tensor([1.0]), None, 0)
    assert (float(q.observer.min_val), float(q.observer.max_val)) == (-3.0, 2.0)
    q.frozen = True
    q.observe_summary(torch.tensor([-9.0]), torch.tensor([9.0]), None, 0)
    assert float(q.observer.min_val) == -3.0


@pytest.mark.parametrize("spec", [ACT, W_SYM, activation_spec(observer="ema")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_equals_fake_quantize_with_inclusive_gradient(spec, dtype):
    quantizer = Quantizer(spec) if spec.observer == "ema" else _local(spec)
    for x in _batches(3):
        quantizer(x)
    quantizer.observe = False
    x = (_batches(1, seed=5)[0] * 2).to(dtype)
    axis = spec.axis if spec.per_channel else None
    grid = (quantizer.scale, quantizer.zero_point, spec.qmin, spec.qmax)
    lo, hi = (t.reshape([-1 if d == axis else 1 for d in range(x.dim())]).to(dtype)
              for t in nudged_range(*grid))
    x = torch.where(torch.arange(x.numel()).reshape(x.shape) % 7 == 0, hi.expand(x.shape), x)
    x = x.requires_grad_()
    out = quantizer(x)
    out.backward(torch.ones_like(out))
    assert out.dtype == dtype
    assert torch.equal(out, fake_quantize(x.detach(), *grid, axis))
    assert torch.equal(x.grad, ((x >= lo) & (x <= hi)).to(dtype))


def test_frozen_quantizer_rejects_nonfinite_input_and_invalid_loaded_qparams():
    quantizer = _local(ACT)
    quantizer(torch.tensor([-1.0, 3.0]))
    quantizer.frozen = True
    with pytest.raises(ValueError, match=r"fake_quantize: x must be finite, got inf"):
        quantizer(torch.tensor([1.0, float("inf")]))
    state = quantizer.state_dict()
    state["scale"] = torch.tensor(-0.5)
    quantizer.load_state_dict(state)
    with pytest.raises(ValueError, match=r"scale must be > 0"):
        quantizer(torch.tensor([1.0]))


@pytest.mark.parametrize("spec", [
    QuantSpec(symmetric=True, narrow_range=True, per_channel=True, axis=0, observer="minmax"),
    QuantSpec(symmetric=True, per_channel=True, axis=1, bits=4, observer="minmax"),
    QuantSpec(observer="ema"), QuantSpec(symmetric=True, observer="minmax")])
@pytest.mark.parametrize("current_ranges", [False, True])
def test_every_observing_step_equals_the_checked_qparams_and_fake_quantize_ste(spec,
                                                                                current_ranges):
    from intq.fakequant import fake_quantize_ste

    quantizer = Quantizer(spec, current_ranges=current_ranges)
    qparams = symmetric_qparams if spec.symmetric else affine_qparams
    for x in _batches(4, shape=(6, 5, 3, 3)):
        x = x.requires_grad_()
        out = quantizer(x)
        out.backward(torch.ones_like(out))
        lo, hi = quantizer.observer.ranges()
        scale, zp = qparams(lo, hi, spec.qmin, spec.qmax)
        assert torch.equal(quantizer.scale, scale) and torch.equal(quantizer.zero_point, zp)
        assert torch.equal(quantizer.min_val, lo) and torch.equal(quantizer.max_val, hi)
        reference = x.detach().clone().requires_grad_()
        expected = fake_quantize_ste(reference, scale, zp, spec.qmin, spec.qmax,
                                     spec.axis if spec.per_channel else None)
        expected.backward(torch.ones_like(expected))
        assert torch.equal(out, expected) and torch.equal(x.grad, reference.grad)
