"""The exporter pads a stem conv's input channels to a multiple of 4 so that ONNX Runtime runs
it on MLAS's symmetric ConvSym kernel: only where that kernel then applies (groups 1, int8
weights with zero point 0, >= 16 output channels, a multiple of 8, input = Quantize of a graph
input), with zero weights for the new channels, so every integer stays identical."""

import numpy as np
import pytest
from onnx import numpy_helper

from intq.convert import ProgramBuilder, QTensor
from intq.export import export_onnx
from intq.runtime import OrtSession, run_reference

X_Q = QTensor(0.03, 117)


def _stem_program(in_channels=3, out_channels=16, *, weight_zero_point=0, groups=1,
                  mid_network=False, batch=2, dtype="uint8"):
    """Quantize -> stem conv (3x3, stride 2, TF-style (0, 0, 1, 1) padding, ReLU6-like clamp)
    -> 1x1 conv, plus a second conv reading the same quantized input (7-bit weights: exact on
    every x86 CPU with the int8 weights weight_type="auto" picks). int8 activation grids
    are the uint8 ones shifted by -128."""
    rng = np.random.default_rng(in_channels * 100 + out_channels)
    shift = -128 if dtype == "int8" else 0

    def grid(scale, zero_point, qmax=None):
        return QTensor(scale, zero_point + shift, dtype,
                       qmax=None if qmax is None else qmax + shift)

    b = ProgramBuilder()
    q = b.quantize(b.input("x", (batch, in_channels, 16, 16)),
                   grid(X_Q.scale, X_Q.zero_point))
    if mid_network:
        q = b.conv2d(q, rng.integers(-63, 64, (in_channels, in_channels, 1, 1)),
                     np.float32(0.01), grid(0.04, 90), name="pre")

    def conv(x, cin, cout, k, name, **kw):
        scale = rng.uniform(0.002, 0.01, cout).astype(np.float32)
        w = rng.integers(-63, 64, (cout, cin // kw.get("groups", 1), k, k))
        return b.conv2d(x, w, scale, grid(0.05, 3, qmax=200), name=name,
                        bias=rng.integers(-500, 500, cout), **kw)

    stem = conv(q, in_channels, out_channels, 3, "stem", stride=2, padding=(0, 0, 1, 1),
                weight_zero_point=weight_zero_point, groups=groups)
    side = conv(q, in_channels, out_channels, 3, "side", stride=2, padding=(0, 0, 1, 1))
    y = b.add(conv(stem, out_channels, out_channels, 1, "head"), side, grid(0.08, 128))
    return b.build([b.dequantize(y, name="y")])


def _pads(model):
    return [n for n in model.graph.node if n.op_type == "Pad"]


def _conv_node(model, name):
    return next(n for n in model.graph.node
                if n.op_type == "QLinearConv" and n.output[0] in (name, f"{name}/unclamped"))


def _weight(model, name):
    return next(numpy_helper.to_array(t) for t in model.graph.initializer
                if t.name == f"{name}/weight")


@pytest.mark.parametrize("in_channels, added", [(1, 3), (3, 1), (6, 2)])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_stem_input_padded_with_zero_point_and_zero_weights(in_channels, added, dtype):
    """The Pad value is the input's zero point in the model's uint8 domain (int8 + 128)."""
    program = _stem_program(in_channels, dtype=dtype)
    model = export_onnx(program)
    (pad,) = _pads(model)  # one Pad, shared by both convs reading the quantized input
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert inits[pad.input[1]].tolist() == [0, 0, 0, 0, 0, added, 0, 0]
    assert inits[pad.input[2]] == X_Q.zero_point
    for conv in ("stem", "side"):
        assert _conv_node(model, conv).input[0] == pad.output[0]
        w = _weight(model, conv)
        assert w.shape[1] == in_channels + added and not w[:, in_channels:].any()
        np.testing.assert_array_equal(w[:, :in_channels], program.producer(conv).weight)


@pytest.mark.parametrize("in_channels", [1, 3, 4])
@pytest.mark.parametrize("batch", [2, None])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_padded_stem_gives_identical_integers(in_channels, batch, dtype):
    program = _stem_program(in_channels, batch=batch, dtype=dtype)
    session = OrtSession(export_onnx(program, intermediates=True).SerializeToString())
    n = 2 if batch else 3
    x = np.random.default_rng(in_channels).normal(0, 2, (n, in_channels, 16, 16))
    ref = run_reference(program, x.astype(np.float32), return_all=True)
    got = session.run_all(x)
    for name in list(program.tensors) + list(program.outputs):
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


@pytest.mark.parametrize("kwargs, weight_type", [
    ({}, "u8"),                               # uint8 weights: no ConvSym
    ({"out_channels": 8}, "auto"),            # fewer than 16 output channels
    ({"out_channels": 20}, "auto"),           # not a multiple of 8 (AVX2 ConvSym)
    ({"in_channels": 4}, "auto"),             # already a multiple of 4
    ({"mid_network": True}, "auto"),          # input is channels-last inside ORT
    ({"weight_zero_point": 2}, "auto"),       # asymmetric weights
    ({"in_channels": 3, "out_channels": 48, "groups": 3}, "auto"),  # grouped
])
def test_no_pad_where_convsym_would_not_apply(kwargs, weight_type):
    program = _stem_program(**kwargs)
    model = export_onnx(program, weight_type=weight_type)
    assert _conv_node(model, "stem").input[0] == program.producer("stem").inputs[0]
    assert _weight(model, "stem").shape == program.producer("stem").weight.shape
