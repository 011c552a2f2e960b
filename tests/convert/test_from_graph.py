"""convert_to_program: the IntProgram of a calibrated graph holds exactly the integers the
simulation used (weights, int32 biases, output grids and clamps), has one op per fused node,
and converts float regions, ceil-mode pools and standalone ReLUs; what has no integer form
is an IntqError that says why."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from agreement.simulated import float_output_bound, locally_recomputed, simulated_integers
from graph.nets import (
    SAME_PADDING_WARNING,
    InplaceNet,
    ReshapedHead,
    SharedLogits,
    build,
)
from ptq.nets import CeilPoolNet, SigmoidGateNet, SigmoidGatePoolNet, images, seeded
from torch import fx, nn

from intq.convert.from_graph import convert_to_program, float_islands, qtensor_of
from intq.convert.program import (
    Dequantize,
    QAdd,
    QAvgPool2d,
    QConv2d,
    QGlobalAvgPool,
    QLinear,
    QMaxPool2d,
    QTensor,
    Quantize,
)
from intq.errors import IntqError
from intq.export import export_onnx
from intq.fakequant import Quantizer, activation_spec
from intq.graph import FusedAdd
from intq.graph.place import ACT_PREFIX, activation_quantizers, quant_layers
from intq.ptq import quantize
from intq.recipes import get_recipe
from intq.runtime import OrtSession, run_reference


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=["mobilenet_v1", "mobilenet_v2", "resnet", "inception"])
def converted(request) -> tuple[fx.GraphModule, object]:
    qgm = quantize(build(request.param), images(16), progress=False)
    return qgm, convert_to_program(qgm, (1, 28, 28))


def ops_of(program, kind) -> list:
    return [op for op in program.ops if isinstance(op, kind)]


def test_one_op_per_fused_node(converted):
    qgm, program = converted
    layers = dict(quant_layers(qgm))
    convs = {n.name for n in qgm.graph.nodes if n.op == "call_module"
             and type(qgm.get_submodule(n.target)).__name__ == "QuantConv2d"}
    assert {op.output for op in ops_of(program, QConv2d)} == convs
    assert len(ops_of(program, QConv2d)) + len(ops_of(program, QLinear)) == len(layers)
    assert len(ops_of(program, QAdd)) == sum(isinstance(m, FusedAdd) for m in qgm.modules())
    # the classifier writes the float logits itself: no Dequantize, no output QTensor
    assert [type(program.ops[0]), type(program.ops[-1])] == [Quantize, QLinear]
    assert program.ops[-1].requant is None and program.outputs == (program.ops[-1].output,)
    assert len(ops_of(program, Quantize)) == 1 and not ops_of(program, Dequantize)
    assert program.inputs[0].shape == (None, 1, 28, 28)


def test_weights_are_the_simulations_integers(converted):
    """The simulation's weights are exactly float32(w_int·S_w[c]), w_int in [-127, 127]."""
    qgm, program = converted
    for node in qgm.graph.nodes:
        if node.op != "call_module" or str(node.target) not in dict(quant_layers(qgm)):
            continue
        layer = qgm.get_submodule(node.target)
        op = program.producer(node.name)
        scale = layer.weight_quantizer.scale
        assert np.array_equal(op.weight_scale, scale.numpy())
        shape = (-1,) + (1,) * (op.weight.ndim - 1)
        rebuilt = torch.from_numpy(op.weight.astype(np.float64)) * scale.double().reshape(shape)
        assert torch.equal(layer.quantized_weight().detach(), rebuilt.float()), node.name
        assert op.weight.min() >= -127 and op.weight_zero_point == 0


def test_int32_bias_is_the_simulated_bias_grid(converted):
    """bias_int = round_half_even(b / (S_in·S_w[c])) (checked with exact fractions), and the
    simulation added exactly bias_int·S_in·S_w[c] (rounded to float32)."""
    qgm, program = converted
    for name, layer in quant_layers(qgm):
        node = next(n for n in qgm.graph.nodes if n.target == name)
        op = program.producer(node.name)
        s_in = layer.input_quantizer.scale.item()
        s_w = layer.weight_quantizer.scale.reshape(-1).tolist()
        s_w = s_w * len(op.bias) if len(s_w) == 1 else s_w
        for c, b in enumerate(layer.layer.bias.detach().tolist()):
            ratio = Fraction(b) / (Fraction(s_in) * Fraction(s_w[c]))
            assert int(op.bias[c]) == round(ratio), (name, c)  # Python round: half to even
        simulated = layer.simulated_bias().detach().double()
        grid = torch.tensor(op.bias, dtype=torch.float64) * s_in * torch.tensor(s_w).double()
        assert torch.equal(simulated, grid.float().double()), name


def test_output_grids_are_the_quantizers(converted):
    qgm, program = converted
    for node in qgm.graph.nodes:
        if node.op != "call_module" or not str(node.target).startswith(f"{ACT_PREFIX}."):
            continue
        owner = node.args[0]
        name = node.name if owner.op == "placeholder" else owner.name
        q, qt = qgm.get_submodule(node.target), program.tensors[name]
        assert (qt.scale, qt.zero_point, qt.dtype) == (q.scale.item(), q.zero_point.item(),
                                                        "int8"), name
        activation = getattr(qgm.get_submodule(owner.target), "activation", None) \
            if owner.op == "call_module" else None
        assert qt.qmin == (qt.zero_point if activation in ("relu", "relu6") else -128), name
        high = qt.zero_point + round(Fraction(6) / Fraction(qt.scale))
        assert qt.qmax == (min(127, high) if activation == "relu6" else 127), name


def frozen_quantizer(scale: float, zero_point: int, **spec) -> Quantizer:
    q = Quantizer(activation_spec(**spec))
    q.scale, q.zero_point = torch.tensor(scale), torch.tensor(zero_point, dtype=torch.int32)
    return q


def test_qtensor_of_dtypes_and_clamps():
    assert qtensor_of(frozen_quantizer(0.1, -3)) == QTensor(0.1, -3, "int8", -128, 127)
    assert qtensor_of(frozen_quantizer(0.1, 3, signed=False)) == QTensor(0.1, 3, "uint8")
    assert qtensor_of(frozen_quantizer(0.1, 0, bits=16)).dtype == "int16"
    assert qtensor_of(frozen_quantizer(0.1, 0, bits=4)) == QTensor(0.1, 0, "int8", -8, 7)
    assert qtensor_of(frozen_quantizer(0.1, -3), "relu") == QTensor(0.1, -3, "int8", -3, 127)
    # relu6: 6 is 150 levels above the zero point at scale 0.04; 300 at 0.02 (beyond int8)
    assert qtensor_of(frozen_quantizer(0.04, -128), "relu6").qmax == 22
    assert qtensor_of(frozen_quantizer(0.02, -128), "relu6").qmax == 127


def test_weight_only_graph_has_no_integer_form():
    qgm = quantize(build("resnet"), images(8), get_recipe(weight_only=True), progress=False)
    with pytest.raises(IntqError, match=r"no activation quantizer after it.*not --weight-only"):
        convert_to_program(qgm, (1, 28, 28))


def test_asymmetric_per_channel_weights_have_no_integer_form():
    qgm = quantize(build("resnet"), images(8), "asym-per-channel-8", progress=False)
    with pytest.raises(IntqError, match=r"asymmetric per-channel weights .*symmetric"):
        convert_to_program(qgm, (1, 28, 28))


class ExcludedPaddingPoolNet(nn.Module):
    """conv -> AvgPool2d(3, 2, 1, count_include_pad=False) -> linear: the border windows
    divide by their own count, which no integer pool here computes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.pool = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
        self.fc = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def test_average_pool_excluding_padding_is_an_exported_float_island():
    torch.manual_seed(0)
    qgm = quantize(ExcludedPaddingPoolNet().eval(), images(8), progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    assert [(i.op, i.exported) for i in float_islands(program)] == [("avg_pool2d", True)]
    x = images(4).numpy()
    want = run_reference(program, x)[program.outputs[0]]
    got = OrtSession(export_onnx(program).SerializeToString()).run(x)
    np.testing.assert_array_equal(got, want)


def test_low_and_high_bit_widths():
    """4-bit weights keep their width in the program; 16-bit activations run in the
    reference (int16 tensors) and are refused by the ONNX writer."""
    recipe = get_recipe("sym-per-channel-4", a_bits=16)
    qgm = quantize(build("mobilenet_v1"), images(8), recipe, progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    layers = ops_of(program, QConv2d) + ops_of(program, QLinear)
    assert {op.weight_bits for op in layers} == {4}
    assert all(op.weight.min() >= -7 and op.weight.max() <= 7 for op in layers)
    assert {qt.dtype for qt in program.tensors.values()} == {"int16"}
    got = run_reference(program, images(4).numpy())[program.outputs[0]]
    with torch.no_grad():
        want = qgm(images(4)).numpy()
    fc = program.producer(program.outputs[0])  # float-output QLinear
    # 2 LSB on every input of the classifier, through its weights
    bound = 2 * program.tensors[fc.inputs[0]].scale * np.abs(
        fc.weight * fc.weight_scale[:, None]).sum(axis=1).max()
    assert np.abs(got - want).max() <= bound
    with pytest.raises(ValueError, match="int16"):
        export_onnx(program)


def agreement(qgm: fx.GraphModule, program, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Simulated integers; asserts reference == ONNX Runtime on every tensor and reference
    == simulation op by op within 1 LSB."""
    sim = simulated_integers(qgm, program, x)
    ref = run_reference(program, x.numpy(), return_all=True)
    ort = OrtSession(export_onnx(program, intermediates=True).SerializeToString()).run_all(
        x.numpy())
    local = locally_recomputed(program, sim, x.numpy(), "float32_half_even")
    for name in program.tensors:
        np.testing.assert_array_equal(ort[name], ref[name], err_msg=name)
        diff = np.abs(local[name].astype(np.int32) - sim[name])
        assert diff.max() <= 1, name
    return sim


def test_ceil_mode_max_pool_is_floor_mode_with_trailing_padding():
    """MaxPool2d(3, 2, ceil_mode=True) on 26x26 gives 13x13 (floor mode 12x12) and
    max_pool2d(2, ceil_mode=True) on 13x13 gives 7x7: the program pads the bottom/right
    (padding is never the maximum) and agrees with torch, the reference and ONNX Runtime."""
    model = seeded(CeilPoolNet)
    qgm = quantize(model, images(16), progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    pools = ops_of(program, QMaxPool2d)
    assert [p.padding for p in pools] == [(0, 0, 1, 1), (0, 0, 1, 1)]
    sim = agreement(qgm, program, images(8))
    assert sim["pool"].shape == (8, 4, 13, 13) and sim["max_pool2d"].shape == (8, 4, 7, 7)


def test_standalone_relu_is_a_clamp_on_the_same_grid():
    """InplaceNet's y.relu_() (not fusable: the conv output has other readers) reuses the
    conv's quantizer; the program dequantizes and quantizes back with qmin = Z, which is
    exact: identical integers in the simulation, the reference and ONNX Runtime."""
    model = build("inplace")
    assert isinstance(model, InplaceNet)
    qgm = quantize(model, images(16), progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    relu = program.producer("relu_")
    assert isinstance(relu, Quantize)
    conv, out = program.tensors["conv"], program.tensors["relu_"]
    assert (out.scale, out.zero_point, out.qmin) == (conv.scale, conv.zero_point,
                                                     conv.zero_point)
    x = images(8)
    sim = agreement(qgm, program, x)
    ref = run_reference(program, x.numpy(), return_all=True)
    np.testing.assert_array_equal(ref["relu_"], np.maximum(ref["conv"], conv.zero_point))
    np.testing.assert_array_equal(sim["relu_"], np.maximum(sim["conv"], conv.zero_point))


def test_global_pool_after_a_float_island_knows_its_shape_and_runs_in_onnx_runtime():
    qgm = quantize(seeded(SigmoidGatePoolNet), images(8), leaf_modules=["gate"], progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    [island] = float_islands(program)
    assert island.node == "gate" and island.exported and "leaf module" in island.reason
    x = images(4).numpy()
    want = run_reference(program, x)
    got = OrtSession(export_onnx(program).SerializeToString()).run_all(x)
    for name in program.outputs:
        np.testing.assert_array_equal(got[name], want[name])


def test_float_region_program_matches_the_simulation():
    """conv -> gate (float) -> conv: the callable FloatOp receives the dequantized conv1
    integers, i.e. exactly the simulation's fake-quantized floats, so the gate's quantized
    output is identical; every other tensor agrees within 1 LSB op by op."""
    qgm = quantize(seeded(SigmoidGateNet), images(16), leaf_modules=["gate"], progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    x = images(8)
    sim = simulated_integers(qgm, program, x)
    local = locally_recomputed(program, sim, x.numpy(), "float32_half_even")
    np.testing.assert_array_equal(local["act_q_gate"], sim["act_q_gate"])
    assert all(np.abs(local[n].astype(np.int32) - sim[n]).max() <= 1 for n in program.tensors)


def test_pools_map_one_to_one_and_the_concat_group_writes_one_grid():
    """InceptionLike: 9 quantizer calls, 6 quantizers (the 4 concat branches share one, the
    classifier has none); every branch's op writes the shared grid and the QConcat needs no
    requantization."""
    qgm = quantize(build("inception"), images(8), progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    assert len(ops_of(program, QAvgPool2d)) == 1 and len(ops_of(program, QGlobalAvgPool)) == 1
    calls = [n for n in qgm.graph.nodes if str(n.target).startswith(f"{ACT_PREFIX}.")]
    assert (len(calls), len(dict(activation_quantizers(qgm)))) == (9, 6)
    assert len(ops_of(program, Quantize)) == 1  # the input's; branches requantize in place


class _Stranger(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.conv(x))


def test_unknown_module_becomes_a_named_float_island():
    qgm = quantize(build("mobilenet_v1"), images(8), progress=False)
    layer = qgm.get_submodule("features.0").layer  # replace a quantized conv by a stranger
    qgm.add_submodule("features.0", _Stranger(nn.Conv2d(1, 8, 3, 2, 1).eval()))
    qgm.get_submodule("features.0").conv.load_state_dict(layer.state_dict(), strict=False)
    program = convert_to_program(qgm, (1, 28, 28))
    [island] = float_islands(program)
    assert island.node == "features_0" and island.op == "_Stranger"
    assert island.reason == "no integer form for _Stranger module 'features.0'"


@pytest.mark.filterwarnings(SAME_PADDING_WARNING)
@pytest.mark.parametrize("name", ["reshaped", "shared", "linear_bn", "mobilenet_v2"])
def test_the_classifier_is_a_float_output_qlinear(name):
    """The classifier becomes a QLinear with requant None writing float32 (flatten/reshape after
    it run on float32, no Dequantize). ONNX Runtime's output is identical to the reference's
    (the same float32 operations: float32(acc)·float32(S_x·S_w[c])), and the simulation's
    float output is within the float32 summation bound of float_output_bound, given the same
    integer input (measured: at most 0.12 of the bound, 2e-7 of the largest logit)."""
    model = {"reshaped": ReshapedHead, "shared": SharedLogits}.get(name)
    model = seeded(model) if model else build(name)
    x = images(8)
    qgm = quantize(model, x, progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    floats = [op for op in ops_of(program, QLinear) if op.requant is None]
    assert len(floats) == 1 and floats[0].output not in program.tensors
    fc = floats[0]
    last = program.outputs[-1]
    assert not ops_of(program, Dequantize) or name == "shared"  # shared: fc's value is int
    ref = run_reference(program, x.numpy(), return_all=True)
    ort = OrtSession(export_onnx(program).SerializeToString()).run_all(x.numpy())
    for out in program.outputs:
        assert ort[out].dtype == ref[out].dtype == np.float32
        np.testing.assert_array_equal(ort[out], ref[out], err_msg=out)
    sim_in = simulated_integers(qgm, program, x)[fc.inputs[0]]
    local = run_reference(program, {fc.inputs[0]: sim_in}, return_all=True)
    with torch.no_grad():
        sim = qgm(x)
    sim = (sim[-1] if isinstance(sim, tuple) else sim).numpy()
    assert local[last].shape == sim.shape
    bound = float_output_bound(fc, sim_in, program.tensors[fc.inputs[0]])
    assert (np.abs(local[fc.output] - sim.reshape(local[fc.output].shape)) <= bound).all()


def test_a_reshape_after_the_classifier_stays_float():
    qgm = quantize(seeded(ReshapedHead), images(8), progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    kinds = [type(op).__name__ for op in program.ops[-3:]]
    assert kinds == ["QLinear", "Reshape", "Flatten"]
    assert not set(op.output for op in program.ops[-3:]) & set(program.tensors)
    assert program.outputs == (program.ops[-1].output,)
