"""What the LiteRT writer refuses: one-line ValueErrors naming the op, and no partial file."""

from dataclasses import dataclass

import numpy as np
import pytest
from onnx import TensorProto, helper

from intq.convert import ProgramBuilder, QTensor
from intq.convert.program import IntProgram, Op
from intq.export.tflite import export_tflite

from .tflite_programs import tflite_cnn


@dataclass(frozen=True, init=False)
class QUnknown(Op):
    """An integer op the writer does not know (stands in for ops added after it)."""

    inputs: tuple[str, ...]
    output: str

    def __init__(self, a: str, b: str, output: str):
        object.__setattr__(self, "inputs", (a, b))
        object.__setattr__(self, "output", output)


def _conv_program(dtype="int8", bits=8, weight_zero_point=0, tail=None):
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 2, 4, 4)), QTensor(0.1, 0, dtype))
    c = b.conv2d(q, np.ones((2, 2, 1, 1), np.int16), 0.01, QTensor(0.1, 0, dtype),
                 weight_bits=bits, weight_zero_point=weight_zero_point)
    d = b.dequantize(c)
    return b.build([tail(b, d) if tail else d])


def _island(b: ProgramBuilder, d: str) -> str:
    """A float island (an ONNX Identity) after the dequantized conv."""
    graph = helper.make_graph([helper.make_node("Identity", ["a"], ["b"])], "island",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    model = helper.make_model(graph)
    return b.float_subgraph([d], model.SerializeToString(), (1, 2, 4, 4),
                            source="LayerNorm:\n no integer form")


def _mul_of_ranks_4_and_2() -> IntProgram:
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 2, 4, 4)), QTensor(0.1, 0, "int8"))
    g = b.quantize(b.input("g", (1, 4)), QTensor(0.01, -128, "int8"))
    return b.build([b.dequantize(b.mul(q, g, QTensor(0.1, 0, "int8")))])


def _with_unknown_op() -> IntProgram:
    p = _conv_program()
    quantize, conv, deq = p.ops
    tensors = {**p.tensors, "m": p.tensors[conv.output]}
    ops = (quantize, conv, QUnknown(conv.output, conv.output, "m"),
           type(deq)("m", deq.output))
    return IntProgram(p.inputs, p.outputs, tensors, ops)


@pytest.mark.parametrize("program, message", [
    (_with_unknown_op, "QUnknown -> 'm': QUnknown has no LiteRT form"),
    (lambda: _conv_program(tail=_island),
     r"FloatSubgraph -> 'float\d+': float island \(LayerNorm: no integer form\) has no "
     r"LiteRT form; write ONNX instead"),
    (lambda: _conv_program(dtype="int16"), "int16 activations"),
    (_mul_of_ranks_4_and_2, r"QMul -> 'mul\d+': MUL inputs of different ranks"),
    (lambda: _conv_program(bits=12), "at most 8 bits, got 12 bits"),
    (lambda: _conv_program(weight_zero_point=3), "symmetric weights .* zero point 3"),
    (lambda: _conv_program(tail=lambda b, d: b.float_op(d, "callable", fn=np.abs)),
     "float op 'callable'"),
    (lambda: _conv_program(tail=lambda b, d: b.float_op(d, "hardsigmoid")),
     "float op 'hardsigmoid'"),
])
def test_refusals_are_one_line_and_name_the_op(program, message, tmp_path):
    path = tmp_path / "m.tflite"
    with pytest.raises(ValueError, match=message) as info:
        export_tflite(program(), path)
    assert "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary left


def test_dilated_max_pool_is_refused():
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 2, 8, 8)), QTensor(0.1, 0, "int8"))
    program = b.build([b.dequantize(b.max_pool2d(q, 2, stride=1, dilation=2))])
    with pytest.raises(ValueError, match="MAX_POOL_2D has no dilation"):
        export_tflite(program)


def test_writes_atomically_and_replaces(tmp_path):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"old")
    data = export_tflite(tflite_cnn(2), path)
    assert path.read_bytes() == data and data[4:8] == b"TFL3"
    assert [p.name for p in tmp_path.iterdir()] == ["m.tflite"]
