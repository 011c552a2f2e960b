"""AdaRound on a real trained layer stack (the zoo's MobileNet-v2 on Fashion-MNIST, W4):
the learned rounding reconstructs each layer at least as well as rounding to nearest, on the
columns it learned from and on held-out images; every weight is the floor or the ceil of
w/s; an interrupted run leaves the graph it was given untouched."""

import copy
import dataclasses

import pytest
import torch

from intq.adaptive_rounding import AdaRoundSettings, adaround, adaround_graph
from intq.adaptive_rounding import pipeline as pipeline_module
from intq.adaptive_rounding.blocks import block_inputs, layers_of, split_blocks
from intq.adaptive_rounding.rounding import (
    annealed_beta,
    rectified_sigmoid,
    rectified_sigmoid_inverse,
    rounding_regularizer,
)
from intq.graph.place import quant_layers
from intq.ptq import calibrate, prepare_ptq
from intq.recipes import get_recipe
from intq.zoo import load_fashion_mnist, load_model

W4 = get_recipe("sym-per-channel-4")
QUICK = AdaRoundSettings(iterations=120, check_every=20, images=48, column_budget=2**18)


@pytest.fixture(scope="module")
def data():
    test = load_fashion_mnist("test")
    return test.x[:48], test.x[1000:1064]


@pytest.fixture(scope="module")
def calibrated(data):
    torch.set_num_threads(1)
    model = load_model("mobilenet-v2-fmnist")
    qgm = prepare_ptq(model, data[0][:2], W4)
    calibrate(qgm, list(data[0].split(16)), progress=False, bias_correction=False)
    return model, qgm


@pytest.fixture(scope="module")
def rounded(calibrated, data):
    _, qgm = calibrated
    return adaround_graph(qgm, list(data[0].split(16)), QUICK, bias_correction=False,
                          progress=False)


def test_learned_rounding_reconstructs_every_layer_at_least_as_well_as_nearest(rounded):
    _, report = rounded
    assert len(report) == 20
    for layer in report:  # the optimizer's own result, before the keep-the-better choice
        assert layer.learned_error <= layer.nearest_error * (1 + 1e-6), layer
        assert layer.kept
    assert sum(r.learned_error < 0.9 * r.nearest_error for r in report) >= 9
    assert all(0 < r.changed_fraction < 0.5 for r in report[:-1])


def test_learned_rounding_helps_on_held_out_images(calibrated, rounded, data):
    """Whole-model output error against the float model on images AdaRound never saw."""
    model, nearest = calibrated
    learned, _ = rounded
    held_out = data[1]
    with torch.no_grad():
        reference = model(held_out)
        error = {name: (gm(held_out) - reference).pow(2).mean().item()
                 for name, gm in (("nearest", nearest), ("learned", learned))}
    assert error["learned"] < 0.8 * error["nearest"], error


@pytest.fixture(scope="module")
def rounded_blocks(calibrated, data):
    _, qgm = calibrated
    settings = dataclasses.replace(QUICK, granularity="block")
    return adaround_graph(qgm, list(data[0].split(16)), settings, bias_correction=False,
                          progress=False)


def test_blocks_cover_the_graph_in_order_each_reading_only_the_block_before(calibrated):
    _, qgm = calibrated
    blocks = split_blocks(qgm, 3)
    assert [n for block in blocks for n in block] == list(qgm.graph.nodes)
    assert len(blocks) == 7
    for before, block in zip(blocks, blocks[1:], strict=False):
        assert block_inputs(block) == [before[-1]]
        assert len(layers_of(qgm, before)) >= 3


def test_block_rounding_helps_on_held_out_images(calibrated, rounded_blocks, data):
    model, nearest = calibrated
    learned, report = rounded_blocks
    assert len(report) == 20 and all(r.kept for r in report)
    with torch.no_grad():
        reference = model(data[1])
        error = {name: (gm(data[1]) - reference).pow(2).mean().item()
                 for name, gm in (("nearest", nearest), ("learned", learned))}
    assert error["learned"] < 0.8 * error["nearest"], error


def test_every_weight_is_the_floor_or_the_ceil_of_w_over_s(rounded, rounded_blocks):
    for learned, _ in (rounded, rounded_blocks):
        _assert_floor_or_ceil(learned)


def _assert_floor_or_ceil(learned):
    for name, layer in quant_layers(learned):
        scale = layer.weight_quantizer.scale.reshape(-1, *[1] * (layer.layer.weight.dim() - 1))
        ratio = layer.float_weight / scale
        q = layer.layer.weight / scale  # s·n / s: n up to float32 rounding
        assert (q - torch.round(q)).abs().max() < 1e-4, name
        q = torch.round(q)
        spec = layer.weight_quantizer.spec
        floor = torch.floor(ratio).clamp(spec.qmin, spec.qmax)
        ceil = torch.ceil(ratio).clamp(spec.qmin, spec.qmax)
        assert bool(((q == floor) | (q == ceil)).all()), name
        assert torch.equal(layer.quantized_weight(), layer.layer.weight), name


@pytest.fixture(scope="module")
def rounded_with_scales(calibrated, data):
    """AdaRound that also learns the weight scales and a bias shift (no bias correction)."""
    _, qgm = calibrated
    settings = dataclasses.replace(QUICK, learn_scale_and_bias=True)
    return adaround_graph(qgm, list(data[0].split(16)), settings, bias_correction=False,
                          progress=False)


def test_learning_scales_and_biases_beats_learning_the_rounding_alone(calibrated, rounded,
                                                                     rounded_with_scales, data):
    model, _ = calibrated
    with torch.no_grad():
        reference = model(data[1])
        error = {name: (gm(data[1]) - reference).pow(2).mean().item()
                 for name, (gm, _) in (("rounding", rounded), ("scales", rounded_with_scales))}
    assert error["scales"] < 0.95 * error["rounding"], error
    layers = rounded_with_scales[1]
    assert sum(r.learned_error for r in layers) < sum(r.learned_error for r in rounded[1])


def test_learned_scales_keep_every_weight_on_its_grid_and_the_float_model_recoverable(
        calibrated, rounded_with_scales, data):
    model, qgm = calibrated
    learned, _ = rounded_with_scales
    calibrated_scales = {n: layer.weight_quantizer.scale for n, layer in quant_layers(qgm)}
    moved = 0
    for name, layer in quant_layers(learned):
        scale = layer.weight_quantizer.scale
        moved += not torch.equal(scale, calibrated_scales[name])
        q = layer.layer.weight / scale.reshape(-1, *[1] * (layer.layer.weight.dim() - 1))
        assert (q - torch.round(q)).abs().max() < 1e-4, name
        assert torch.equal(layer.quantized_weight(), layer.layer.weight), name
    assert moved == len(calibrated_scales)
    float_graph = copy.deepcopy(learned)
    for module in float_graph.modules():
        if hasattr(module, "fake_quant"):
            module.fake_quant = False
    with torch.no_grad():
        torch.testing.assert_close(float_graph(data[1]), model(data[1]), rtol=1e-4, atol=1e-4)


def test_the_graph_given_is_not_modified(calibrated, rounded):
    _, qgm = calibrated
    for _, layer in quant_layers(qgm):
        assert not hasattr(layer, "float_weight")


def test_an_interrupted_run_leaves_the_graph_untouched(calibrated, data, monkeypatch):
    _, qgm = calibrated
    before = {k: v.clone() for k, v in qgm.state_dict().items()}
    calls = []
    real = pipeline_module.learn_rounding

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline_module, "learn_rounding", interrupted)
    with pytest.raises(KeyboardInterrupt):
        adaround_graph(qgm, [data[0][:8]], AdaRoundSettings(iterations=5), progress=False)
    after = qgm.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bias_correction_removes_the_mean_output_shift(calibrated, data):
    """adaround(..., bias_correction=True) on the whole pipeline: the float biases are kept,
    and switching fake quantization off gives the float model back."""
    model, _ = calibrated
    qgm = adaround(model, data[0][:16], W4, settings=AdaRoundSettings(iterations=10, images=16),
                   progress=False)
    changed = [n for n, layer in quant_layers(qgm)
               if not torch.equal(layer.layer.bias, layer.float_bias)]
    assert len(changed) == 20
    for module in qgm.modules():
        if hasattr(module, "fake_quant"):
            module.fake_quant = False
    with torch.no_grad():
        torch.testing.assert_close(qgm(data[1]), model(data[1]), rtol=1e-4, atol=1e-4)


def test_rectified_sigmoid_round_trips_and_the_regularizer_is_zero_on_binary_values():
    h = torch.linspace(0.0, 0.99, 100)
    torch.testing.assert_close(rectified_sigmoid(rectified_sigmoid_inverse(h)), h)
    assert rectified_sigmoid(torch.tensor([-20.0, 20.0])).tolist() == [0.0, 1.0]
    assert rounding_regularizer(torch.tensor([0.0, 1.0, 1.0]), 2.0).item() == 0.0
    assert rounding_regularizer(torch.tensor([0.5]), 2.0).item() == 1.0


def test_beta_is_off_during_the_warm_start_then_anneals_from_20_to_2():
    s = AdaRoundSettings(iterations=1000, warm_start=0.2)
    assert annealed_beta(199, 1000, s) is None
    assert annealed_beta(200, 1000, s) == pytest.approx(20.0)
    assert annealed_beta(600, 1000, s) == pytest.approx(11.0)
    assert annealed_beta(1000, 1000, s) == pytest.approx(2.0)


@pytest.mark.parametrize("field,value", [("iterations", 0), ("warm_start", 1.0),
                                         ("beta", (2.0, 20.0)), ("lr", 0.0),
                                         ("scale_bias_lr", -1.0), ("granularity", "net"),
                                         ("block_layers", 0), ("batch_images", 0)])
def test_bad_settings_are_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        AdaRoundSettings(**{field: value})


def test_learned_scales_need_layer_granularity():
    with pytest.raises(ValueError, match="learn_scale_and_bias needs granularity"):
        AdaRoundSettings(granularity="block", learn_scale_and_bias=True)
