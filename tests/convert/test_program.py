"""IntProgram construction: every invariant the docstring promises is enforced with ValueError."""

import numpy as np
import pytest

from intq.convert import (
    Dequantize,
    Flatten,
    FloatOp,
    Input,
    IntProgram,
    ProgramBuilder,
    QConcat,
    QConv2d,
    QLinear,
    QTensor,
    Quantize,
    Requant,
    Reshape,
    conv_requant,
)
from intq.convert.synthetic import random_cnn


def _requant(channels: int = 1) -> Requant:
    return Requant(np.full(channels, 0.01, np.float32), np.full(channels, 2**30, np.int32),
                   np.full(channels, -5, np.int32))


def _conv(**kwargs) -> QConv2d:
    args = dict(weight=np.zeros((4, 3, 3, 3), np.int8), weight_scale=np.full(4, 0.1),
                requant=_requant(4))
    args.update(kwargs)
    return QConv2d("q", "c", args.pop("weight"), args.pop("weight_scale"), args.pop("requant"),
                   **args)


def _program(ops, tensors, outputs=("y",)) -> IntProgram:
    return IntProgram((Input("x", (None, 3, 4, 4)),), outputs, tensors, ops)


def test_qtensor_rounds_scale_to_float32_and_defaults_to_dtype_range():
    t = QTensor(0.1, 3, "int8")
    assert t.scale == float(np.float32(0.1)) and (t.qmin, t.qmax) == (-128, 127)


@pytest.mark.parametrize("kwargs", [
    dict(scale=0.1, zero_point=0, dtype="int4"),
    dict(scale=0.0, zero_point=0),
    dict(scale=float("nan"), zero_point=0),
    dict(scale=0.1, zero_point=256),
    dict(scale=0.1, zero_point=5, qmin=6),
    dict(scale=0.1, zero_point=0, qmin=0, qmax=0),
    dict(scale=0.1, zero_point=1.0),
])
def test_qtensor_rejects(kwargs):
    with pytest.raises(ValueError, match="QTensor"):
        QTensor(**kwargs)


def test_weights_must_fit_their_bits():
    with pytest.raises(ValueError, match="4-bit weights must lie in"):
        _conv(weight=np.full((4, 3, 3, 3), 8), weight_bits=4)
    with pytest.raises(ValueError, match="weight_bits"):
        _conv(weight_bits=17)
    with pytest.raises(ValueError, match="weight_zero_point"):
        _conv(weight_zero_point=200)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weight_scale=np.full(3, 0.1)), "weight_scale must have shape"),
    (dict(weight_scale=np.array([0.1, 0.1, -1.0, 0.1])), "finite and > 0"),
    (dict(bias=np.zeros(5, np.int32)), "bias must have shape"),
    (dict(bias=np.zeros(4, np.float32)), "integer values"),
    (dict(requant=_requant(2)), "requant must be a Requant with 1 or 4"),
    (dict(weight_scale=np.full(4, 0.1), requant=_requant(1)), "per-channel requant"),
    (dict(groups=3), "groups"),
    (dict(padding=(1, 2, 3)), "padding"),
    (dict(stride=0), "stride"),
])
def test_conv_rejects(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _conv(**kwargs)


def test_conv_normalizes_padding_and_freezes_arrays():
    op = _conv(padding=(1, 2), stride=2)
    assert op.padding == (1, 2, 1, 2) and op.stride == (2, 2)
    with pytest.raises(ValueError):
        op.weight[0, 0, 0, 0] = 1


def test_requant_rejects_bad_parameters():
    with pytest.raises(ValueError, match="one length"):
        Requant(np.ones(2, np.float32), np.ones(3, np.int32), np.ones(3, np.int32))
    with pytest.raises(ValueError, match="shift in"):
        Requant(np.ones(1, np.float32), np.ones(1, np.int32), np.array([31]))


def test_program_checks_order_kinds_and_single_assignment():
    t = {"q": QTensor(0.1, 0)}
    good = [Quantize("x", "q"), Dequantize("q", "y")]
    assert _program(good, t).producer("q") is good[0]
    with pytest.raises(ValueError, match="topological order"):
        _program(good[::-1], t)
    with pytest.raises(ValueError, match="written twice"):
        _program([*good, Dequantize("q", "y")], t)
    with pytest.raises(ValueError, match="must be a float tensor"):
        _program([Quantize("x", "q"), Dequantize("q", "y")], {**t, "y": QTensor(0.1, 0)})
    with pytest.raises(ValueError, match="input 'q' must be a float"):
        _program([Quantize("x", "q"), FloatOp("q", "y", "relu")], t)
    with pytest.raises(ValueError, match="input 'x' must be an integer"):
        _program([Quantize("x", "q"), Dequantize("x", "y")], t)
    with pytest.raises(ValueError, match="never produced"):
        _program(good, {**t, "z": QTensor(0.1, 0)})
    with pytest.raises(ValueError, match="output 'q' must be a float"):
        _program(good, t, outputs=("q",))


def test_lossless_ops_need_shared_qparams():
    tensors = {"a": QTensor(0.1, 0), "b": QTensor(0.2, 0), "c": QTensor(0.1, 0)}
    ops = [Quantize("x", "a"), Quantize("x", "b"), QConcat(("a", "b"), "c"), Dequantize("c", "y")]
    with pytest.raises(ValueError, match="share scale, zero point and dtype"):
        _program(ops, tensors)


def test_float_op_validates_name_arity_and_callable():
    with pytest.raises(ValueError, match="op must be one of"):
        FloatOp("x", "y", "gelu")
    with pytest.raises(ValueError, match="takes 2 input"):
        FloatOp("x", "y", "mul")
    with pytest.raises(ValueError, match="fn must be given"):
        FloatOp("x", "y", "callable")
    with pytest.raises(ValueError, match="attrs"):
        FloatOp("x", "y", "sigmoid", {"axis": 1})


def test_builder_fails_at_the_offending_call():
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 3, 8, 8)), QTensor(0.1, 0))
    with pytest.raises(ValueError, match="expected 4 input channels, got 3"):
        b.conv2d(q, np.zeros((2, 4, 1, 1), np.int8), 0.1, QTensor(0.1, 0))
    with pytest.raises(ValueError, match="already used"):
        b.quantize("x", QTensor(0.1, 0), name=q)


def test_builder_derives_requant_from_scales():
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 3, 8, 8)), QTensor(0.02, 0))
    scale = np.array([0.001, 0.003], np.float32)
    c = b.conv2d(q, np.ones((2, 3, 1, 1), np.int8), scale, QTensor(0.05, 0))
    program = b.build([b.dequantize(c)])
    assert program.producer(c).requant == conv_requant(0.02, scale, 0.05)


def test_programs_compare_by_value():
    assert random_cnn(1) == random_cnn(1)
    assert random_cnn(1) != random_cnn(2)


def _linear(requant=None, channels: int = 4) -> QLinear:
    return QLinear("q", "y", np.ones((channels, 3), np.int8), np.full(channels, 0.1), requant,
                   bias=np.arange(channels, dtype=np.int32))


def test_float_output_qlinear_writes_a_float_tensor():
    """requant=None: the output is float32 (never in tensors), flatten/reshape after it are
    float too, and the program may return it directly; a QConv2d has no such form."""
    assert _linear().float_output and not _linear(_requant(4)).float_output
    t = {"q": QTensor(0.1, 0)}
    ops = [Quantize("x", "q"), _linear(), Reshape("y", "r", (-1, 2, 2)), Flatten("r", "f")]
    program = IntProgram((Input("x", (None, 3)),), ("f",), t, ops)
    assert program.outputs == ("f",) and set(program.tensors) == {"q"}
    with pytest.raises(ValueError, match="output 'y' must be a float tensor"):
        IntProgram((Input("x", (None, 3)),), ("y",), {**t, "y": QTensor(0.1, 0)}, ops[:2])
    with pytest.raises(ValueError, match="output 'y' must be in tensors"):
        IntProgram((Input("x", (None, 3)),), ("z",), t,
                   [*ops[:1], _linear(_requant(4)), Dequantize("y", "z")])
    with pytest.raises(ValueError, match="input 'y' must be an integer"):
        IntProgram((Input("x", (None, 3)),), ("z",), t, [*ops[:2], Dequantize("y", "z")])
    with pytest.raises(ValueError, match="requant must be a Requant"):
        _conv(requant=None)
    with pytest.raises(ValueError, match=r"requant must be a Requant with 1 or 4 channels \(or "
                                         r"None for a float output\)"):
        _linear(_requant(3))


def test_builder_linear_without_output_qtensor_is_the_float_form():
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (None, 3)), QTensor(0.02, 0))
    y = b.linear(q, np.ones((2, 3), np.int8), np.float32(0.5), None, bias=np.array([1, 2]))
    f = b.flatten(b.reshape(y, (-1, 2, 1)))
    assert b.is_float(y) and b.is_float(f) and not b.is_float(q)
    assert b.shape(f) == (None, 2)
    program = b.build([f])
    assert program.producer(y).requant is None
    with pytest.raises(ValueError, match="wrong kind"):
        b.dequantize(y)
