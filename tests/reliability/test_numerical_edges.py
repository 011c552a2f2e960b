"""Numerical edge cases through intq.ptq.quantize -> convert_to_program -> run_reference (and
ONNX Runtime): constant activations, dead channels, huge and tiny scales, int32 overflow at 16
bits, layers calibration never reached. Each has a defined result (or a ValueError/IntqError
naming the problem), a warning where the user should look, and never a NaN."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from intq.convert.from_graph import convert_to_program
from intq.convert.program import QConv2d, Quantize
from intq.errors import IntqError
from intq.export import export_onnx
from intq.ptq import calibrate, prepare_ptq, quantize
from intq.recipes import get_recipe
from intq.runtime import OrtSession, run_reference


def _net(channels: int = 4, relu: bool = True, bn: bool = False, head_bias: bool = True):
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, channels, 3, padding=1)]
    layers += [nn.BatchNorm2d(channels)] if bn else []
    layers += [nn.ReLU()] if relu else []
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3, bias=head_bias)]
    return nn.Sequential(*layers).eval()


def _x(n: int = 16, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _run(model, calib, x=None, recipe="sym-per-channel-8"):
    """(program, every reference tensor, intq warnings): quantize, convert, run; the reference
    output equals ONNX Runtime's and is finite."""
    x = calib if x is None else x
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        qgm = quantize(model, calib, recipe, progress=False)
        program = convert_to_program(qgm, tuple(calib.shape[1:]))
    every = run_reference(program, x.numpy(), return_all=True)
    out = every[program.outputs[0]]
    assert np.isfinite(out).all()
    ort = OrtSession(export_onnx(program).SerializeToString()).run(x.numpy())
    np.testing.assert_array_equal(ort, out)
    return program, every, [str(w.message) for w in caught if "intq" in w.filename]


def _conv(program) -> QConv2d:
    return next(op for op in program.ops if isinstance(op, QConv2d))


def _input_qtensor(program):
    return program.tensors[next(op for op in program.ops if isinstance(op, Quantize)).output]


@pytest.mark.parametrize("value, scale", [(0.0, 1.0), (1.0, np.float32(1 / 255))])
def test_constant_calibration_input_warns_and_gets_a_defined_grid(value, scale):
    """All calibration inputs equal c: the range [min(0, c), max(0, c)] (scale 1.0 when c = 0,
    qmath's rule for a zero-width range), and a warning naming the input and c."""
    program, _, caught = _run(_net(), torch.full((8, 1, 8, 8), value), x=_x())
    assert _input_qtensor(program).scale == scale
    assert any(f"after input_1 is the constant {value:g} on every calibration input" in w
               for w in caught), caught


@pytest.mark.parametrize("recipe", ["sym-per-channel-8", "asym-per-layer-8", "sym-per-channel-4"])
def test_dead_channels_output_their_bias(recipe):
    """Output channels with all-zero weights: their integer output is the same at every pixel
    and dequantizes to their bias within half an output step plus half a bias step
    (S_in·S_w[c], the int32 bias grid); a zero bias gives exactly the zero point."""
    model = _net(relu=False)
    with torch.no_grad():
        model[0].weight[1:3] = 0
        model[0].bias[1] = 0.0
        model[0].bias[2] = 0.7
    program, every, _ = _run(model, _x(), recipe=recipe)
    conv = _conv(program)
    q, qt = every[conv.output], program.tensors[conv.output]
    s_in = program.tensors[conv.inputs[0]].scale
    assert (q[:, 1] == qt.zero_point).all()
    values = np.unique(q[:, 2])
    bias_step = s_in * np.broadcast_to(conv.weight_scale, 4)[2]
    assert len(values) == 1
    assert abs((int(values[0]) - qt.zero_point) * qt.scale - 0.7) <= (qt.scale + bias_step) / 2


def test_batchnorm_with_zero_gamma_is_a_dead_channel():
    model = _net(bn=True)
    with torch.no_grad():
        model[1].weight[0] = 0.0
        model[1].bias[0] = 0.5
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    program, every, _ = _run(model, _x())
    conv = _conv(program)
    qt = program.tensors[conv.output]
    values = np.unique(every[conv.output][:, 0])
    assert len(values) == 1 and abs((int(values[0]) - qt.zero_point) * qt.scale - 0.5) <= qt.scale


def test_relu_that_never_fires_warns():
    model = _net()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)
    _, _, caught = _run(model, _x())
    assert any("after _0 is the constant 0" in w for w in caught), caught


def test_near_zero_weights_widen_the_scale_with_a_warning():
    """Weights ~1e-25 with O(1) biases: S_w·S_in is so small that the int32 bias would overflow;
    the weight scales are widened (the channels then output their bias) and a warning says so."""
    model = _net()
    with torch.no_grad():
        model[0].weight.mul_(1e-25)
    _, _, caught = _run(model, _x())
    assert any("near-zero weights got a wider scale" in w for w in caught), caught


@pytest.mark.parametrize("power", [-100, -40, 40, 100])
def test_huge_and_tiny_scales_give_the_same_integers(power):
    """Scaling the first conv (weights and bias) by 2^power scales every activation and every
    activation/weight scale by exactly 2^power (minmax ranges, no head bias): the integer
    program is identical to the unscaled one and its float output is 2^power times larger."""
    recipe = get_recipe("sym-per-channel-8", observer="minmax")
    x = _x()
    base, base_every, _ = _run(_net(head_bias=False), x, recipe=recipe)
    model = _net(head_bias=False)
    with torch.no_grad():
        model[0].weight.mul_(2.0**power)
        model[0].bias.mul_(2.0**power)
    scaled, every, _ = _run(model, x, recipe=recipe)
    assert list(scaled.tensors) == list(base.tensors)
    for name in base.tensors:
        np.testing.assert_array_equal(every[name], base_every[name], err_msg=name)
    c0, c1 = _conv(base), _conv(scaled)
    np.testing.assert_array_equal(c1.weight, c0.weight)
    np.testing.assert_array_equal(c1.bias, c0.bias)
    np.testing.assert_array_equal(c1.weight_scale, c0.weight_scale * np.float32(2.0**power))
    out, base_out = every[scaled.outputs[0]], base_every[base.outputs[0]]
    np.testing.assert_array_equal(out, base_out * np.float32(2.0**power))


def test_float32_overflow_in_the_model_is_a_value_error():
    model = _net()
    with torch.no_grad():
        model[0].weight.fill_(3e38)
    with pytest.raises(ValueError, match="calibration tensor contains .* Inf values"):
        quantize(model, _x(), progress=False)


def test_nan_weights_are_a_value_error():
    model = _net()
    with torch.no_grad():
        model[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="calibration tensor contains 1 NaN values"):
        quantize(model, _x(), progress=False)


def test_calibration_that_never_reaches_the_layers():
    recipe = get_recipe("sym-per-channel-8")
    qgm = prepare_ptq(_net(), _x(2), recipe)
    with pytest.raises(ValueError, match=r"5 quantizer\(s\) have no scale yet \(first: "
                                         r"act_q.input_1\); calibrate"):
        convert_to_program(qgm, (1, 8, 8))
    with pytest.raises(IntqError, match="activation quantizer after input_1 saw no data during "
                                        "calibration"):
        calibrate(qgm, [], progress=False)
    with pytest.raises(IntqError, match="calibration data is empty"):
        quantize(_net(), [], progress=False)


def test_sixteen_bits_overflow_the_int32_accumulator_by_a_named_error():
    """16-bit weights and activations: accumulators beyond int32 make the reference interpreter
    raise a ValueError naming the op (never a wrapped-around integer); 16-bit activations have
    no ONNX form (refused by the exporter). 8-bit weights with 16-bit activations fit."""
    model, x = _net(), _x().abs()
    with torch.no_grad():
        model[0].weight.abs_()  # positive weights on positive inputs: sums of 9 products ~2^30
    wide = quantize(model, x, get_recipe("sym-per-channel-16", a_bits=16), progress=False)
    program = convert_to_program(wide, (1, 8, 8))
    with pytest.raises(ValueError, match=r"QConv2d -> '_0': int32 accumulator overflow"):
        run_reference(program, x.numpy())
    a16 = convert_to_program(quantize(model, x, get_recipe("sym-per-channel-8", a_bits=16),
                                      progress=False), (1, 8, 8))
    assert np.isfinite(run_reference(a16, x.numpy())[a16.outputs[0]]).all()
    with pytest.raises(ValueError, match="is int16; ONNX QOperator ops take 8-bit activations"):
        export_onnx(a16)
