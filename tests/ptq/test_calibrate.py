"""Calibration: weights first, then activations on the quantized weights' outputs; every
quantizer frozen with fake quantization on; bad data and unreachable quantizers are
IntqErrors; dead channels get int32-safe weight scales."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch
from graph.nets import build
from torch import fx

from intq.convert.from_graph import convert_to_program
from intq.convert.program import QConv2d
from intq.errors import IntqError
from intq.fakequant import Quantizer
from intq.graph.place import activation_quantizers, quant_layers
from intq.ptq import calibrate, prepare_ptq, quantize, widen_weight_scales_for_int32_bias
from intq.recipes import get_recipe
from intq.runtime import run_reference

from .nets import DeadChannelNet, PaddedNet, SigmoidGateNet, images, seeded

MINMAX = get_recipe(observer="minmax")


def test_every_quantizer_is_frozen_with_fake_quant_on():
    qgm = quantize(build("mobilenet_v2"), images(8), progress=False)
    quantizers = [m for m in qgm.modules() if isinstance(m, Quantizer)]
    assert len(quantizers) == len(dict(activation_quantizers(qgm))) + len(
        dict(quant_layers(qgm))) == 15 + 12  # no activation quantizer after the classifier
    for q in quantizers:
        assert (q.frozen, q.fake_quant, q.observe, q.has_qparams) == (True, True, False, True)
    scales = {name: q.scale.clone() for name, q in activation_quantizers(qgm)}
    with torch.no_grad():
        qgm(images(8) * 3)  # frozen: new data changes nothing
    assert all(torch.equal(scales[n], q.scale) for n, q in activation_quantizers(qgm))


def test_weight_scales_are_the_folded_weights_max_over_127():
    qgm = quantize(build("mobilenet_v1"), images(8), MINMAX, progress=False)
    for name, layer in quant_layers(qgm):
        w = layer.layer.weight.detach().double()
        amax = w.abs().reshape(len(w), -1).max(1).values
        want = (amax / 127).float()
        assert torch.equal(layer.weight_quantizer.scale, want), name


def test_activations_are_calibrated_on_the_quantized_weights_outputs():
    """In the calibration pass the weights are already fake-quantized (frozen) and the
    activations are not: every layer runs with quantized weights, every activation
    quantizer passes its input through, and each activation range (min/max observer) is
    exactly the range its quantizer saw in that pass."""
    gm = prepare_ptq(build("resnet"), images(2), MINMAX)
    seen: dict[str, list[torch.Tensor]] = {}
    modes: list[tuple[str, bool]] = []

    def record_activation(q, args, name):
        seen.setdefault(name, []).append(args[0].detach().clone())
        modes.append(("activation fake-quantized", q.fake_quant))

    def record_layer(layer, args):
        wq = layer.weight_quantizer
        modes.append(("weights fake-quantized", wq.frozen and wq.fake_quant))

    for name, q in activation_quantizers(gm):
        q.register_forward_pre_hook(lambda q, args, name=name: record_activation(q, args, name))
    for _, layer in quant_layers(gm):
        layer.register_forward_pre_hook(record_layer)
    calibrate(gm, list(images(16).split(8)), progress=False, engine="torch")
    assert len(modes) == 2 * (10 + 7)  # two batches, 10 quantizer calls and 7 layers each
    assert all(value == (what == "weights fake-quantized") for what, value in modes)
    for name, q in activation_quantizers(gm):
        values = torch.cat([v.flatten() for v in seen[name]])
        assert (q.min_val, q.max_val) == (values.min(), values.max()), name


@pytest.mark.parametrize("net", ["resnet", "inception", "mobilenet_v2", "padded"])
def test_the_onnxruntime_pass_calibrates_like_the_eager_pass(net):
    """Same ranges (min/max: the extremes of what each quantizer saw) and bias corrections to
    float32 rounding: ONNX Runtime sums the convolutions in another order. The padded net's
    input means are summed before its zero pads, over the padded positions."""
    x = list(images(16).split(8))

    def model():
        return seeded(PaddedNet) if net == "padded" else build(net)

    eager, ort = (prepare_ptq(model(), images(2), MINMAX) for _ in range(2))
    calibrate(eager, x, progress=False, engine="torch")
    calibrate(ort, x, progress=False, engine="onnxruntime")
    for (name, q_eager), (_, q_ort) in zip(activation_quantizers(eager),
                                           activation_quantizers(ort), strict=True):
        torch.testing.assert_close(q_ort.min_val, q_eager.min_val, rtol=1e-5, atol=1e-6,
                                   msg=name)
        torch.testing.assert_close(q_ort.max_val, q_eager.max_val, rtol=1e-5, atol=1e-6,
                                   msg=name)
    for (name, l_eager), (_, l_ort) in zip(quant_layers(eager), quant_layers(ort), strict=True):
        torch.testing.assert_close(l_ort.layer.bias, l_eager.layer.bias, rtol=1e-5, atol=1e-6,
                                   msg=name)


@pytest.mark.parametrize("sample_size", [None, 1000])
def test_the_onnxruntime_pass_feeds_histogram_observers_like_the_eager_pass(sample_size):
    """MSE observers (the default) get the same histograms: every value (None) or every s-th
    value of the flattened batch counted s times, ranges equal to float32 rounding."""
    default = get_recipe()
    recipe = dataclasses.replace(default, activation=dataclasses.replace(
        default.activation, observer_options={"sample_size": sample_size}))
    x = list(images(16).split(8))
    eager, ort = (prepare_ptq(build("mobilenet_v2"), images(2), recipe) for _ in range(2))
    calibrate(eager, x, progress=False, engine="torch")
    calibrate(ort, x, progress=False, engine="onnxruntime")
    for (name, q_eager), (_, q_ort) in zip(activation_quantizers(eager),
                                           activation_quantizers(ort), strict=True):
        assert q_ort.observer.counts.sum() == q_eager.observer.counts.sum(), name
        torch.testing.assert_close(q_ort.scale, q_eager.scale, rtol=1e-4, atol=0, msg=name)


def test_auto_calibrates_a_graph_with_leaf_modules_in_eager_torch(monkeypatch):
    """A leaf module's Python could branch on the data; a trace would freeze one branch."""
    def refuse(*_args):
        raise AssertionError("auto must not export a graph with leaf modules")

    monkeypatch.setattr("intq.ptq.OrtCalibrationPass", refuse)
    qgm = prepare_ptq(seeded(SigmoidGateNet), images(2), MINMAX, leaf_modules=["gate"])
    calibrate(qgm, [images(8)], progress=False)
    assert all(q.frozen for _, q in activation_quantizers(qgm))


def test_an_unknown_engine_is_refused():
    qgm = prepare_ptq(build("resnet"), images(2), MINMAX)
    with pytest.raises(IntqError, match="unknown calibration engine 'tvm'; choose one of auto"):
        calibrate(qgm, [images(4)], progress=False, engine="tvm")


def test_batches_from_a_tensor_or_a_loader_give_the_same_quantizers():
    x, labels = images(12), torch.arange(12)
    by_tensor = quantize(build("inception"), x, MINMAX, batch_size=5, progress=False)
    loader = [(x[i:i + 5], labels[i:i + 5]) for i in range(0, 12, 5)]
    by_loader = quantize(build("inception"), loader, MINMAX, progress=False)
    a, b = by_tensor.state_dict(), by_loader.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_calibration_inputs_are_refused(bad):
    x = images(4)
    x[2, 0, 5, 5] = bad
    with pytest.raises(IntqError, match="NaN or Inf"):
        quantize(build("mobilenet_v1"), x, progress=False)
    with pytest.raises(IntqError, match="NaN or Inf"):
        quantize(build("mobilenet_v1"), [images(4), x], progress=False)


@pytest.mark.parametrize("data", [[], (), torch.empty(0, 1, 28, 28), [torch.empty(0, 1, 28, 28)]],
                         ids=["list", "tuple", "tensor", "empty-batch"])
def test_empty_calibration_data_is_refused(data):
    with pytest.raises(IntqError, match="empty"):
        quantize(build("mobilenet_v1"), data, progress=False)


def test_integer_inputs_are_refused():
    with pytest.raises(IntqError, match="float tensors"):
        quantize(build("mobilenet_v1"), torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
                 progress=False)


def test_a_quantizer_that_saw_no_data_is_named():
    gm = prepare_ptq(build("resnet"), images(2), get_recipe())
    with pytest.raises(IntqError, match=r"activation quantizer after x saw no data .*reach "
                                        r"every layer"):
        calibrate(gm, [], progress=False)


def dead_channel_program(gamma: float, recipe: str, channels: tuple[int, ...] = (1, 2)):
    """(calibrated graph, its program, number of widening warnings)."""
    model = seeded(DeadChannelNet).kill(gamma, channels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qgm = quantize(model, images(16), recipe, progress=False)
    widened = [w for w in caught if "wider scale" in str(w.message)]
    return qgm, convert_to_program(qgm, (1, 28, 28)), len(widened)


def naive_int32_bias(qgm: fx.GraphModule, per_channel: bool) -> np.ndarray:
    """b / (S_in·max|W|/127): the int32 bias without the widening (float64)."""
    layer = qgm.get_submodule("conv2")
    w = layer.layer.weight.detach().double().reshape(4, -1)
    amax = w.abs().max(1).values if per_channel else w.abs().max().expand(4)
    s_in = layer.input_quantizer.scale.double()
    return (layer.layer.bias.detach().double() / (s_in * amax / 127)).numpy()


@pytest.mark.parametrize("recipe, channels", [("sym-per-channel-8", (1, 2)),
                                              ("asym-per-layer-8", (0, 1, 2, 3))])
def test_near_dead_channels_get_an_int32_safe_scale_and_warn(recipe, channels):
    """BN γ = 1e-7 (what weight decay leaves of a dead channel): the folded weights are ~1e-8,
    so max|W|/127 makes b / (S_in·S_w) ~1e10, beyond int32. The weight scale (per channel,
    or per tensor when the whole layer is dead) is widened to |b| / (S_in·2^30), a warning
    says so, and the integer program runs without overflow, the dead channels outputting
    their bias, as in float."""
    qgm, program, warned = dead_channel_program(1e-7, recipe, channels)
    naive = naive_int32_bias(qgm, per_channel=recipe.startswith("sym-per-channel"))
    assert np.abs(naive).max() > 2**31  # without widening the bias would not fit
    assert warned == 1
    op = program.producer("conv2")
    assert isinstance(op, QConv2d) and np.abs(op.bias.astype(np.int64)).max() <= 2**30
    out = run_reference(program, images(8).numpy(), return_all=True)["conv2"]  # no overflow
    dead = out[:, list(channels)].astype(np.int64)
    qt = program.tensors["conv2"]
    bias = qgm.get_submodule("conv2").layer.bias.detach().double()[list(channels)]
    want = np.rint(bias.numpy() / qt.scale) + qt.zero_point  # relu(b) on the output grid
    assert (np.abs(dead - want[None, :, None, None]) <= 1).all()


def test_exactly_dead_channels_need_no_widening():
    """BN γ = 0 exactly: the folded weights are 0, their range is empty and the scale falls
    back to 1, so the bias fits and nothing is widened."""
    qgm, program, warned = dead_channel_program(0.0, "sym-per-channel-8")
    op = program.producer("conv2")
    assert warned == 0 and (op.weight[1:3] == 0).all()
    assert widen_weight_scales_for_int32_bias(qgm) == 0
    assert np.abs(op.bias.astype(np.int64)).max() < 2**20
