"""What the ONNX exporter refuses, with a ValueError that says why, and its atomic write."""

import numpy as np
import onnx
import pytest

from intq.convert import ProgramBuilder, QTensor, Requant
from intq.convert.program import QConv2d
from intq.convert.synthetic import random_cnn
from intq.export import export_onnx


def _program(dtype="uint8", bits=8, fn=None):
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 2, 4, 4)), QTensor(0.1, 0, dtype))
    c = b.conv2d(q, np.ones((2, 2, 1, 1), np.int16), 0.01, QTensor(0.1, 0, dtype),
                 weight_bits=bits)
    d = b.dequantize(c)
    return b.build([b.float_op(d, "callable", fn=fn) if fn else d])


@pytest.mark.parametrize("program, message", [
    (lambda: _program(dtype="uint16"), "8-bit activations"),
    (lambda: _program(bits=12), "12-bit weights do not fit"),
    (lambda: _program(fn=np.abs), "callable FloatOp cannot be exported"),
])
def test_refusals(program, message):
    with pytest.raises(ValueError, match=message):
        export_onnx(program())


def test_inconsistent_multiplier_is_refused():
    program = _program()
    conv = program.ops[1]
    off = Requant(conv.requant.multiplier_f32 * np.float32(1.0000001), conv.requant.m0,
                  conv.requant.shift)
    bad = QConv2d(conv.inputs[0], conv.output, conv.weight, conv.weight_scale, off)
    tampered = type(program)(program.inputs, program.outputs, program.tensors,
                             (program.ops[0], bad, *program.ops[2:]))
    with pytest.raises(ValueError, match="differs from .* ONNX Runtime derives"):
        export_onnx(tampered)


def test_bad_weight_type():
    with pytest.raises(ValueError, match="weight_type"):
        export_onnx(_program(), weight_type="s4")


def test_writes_a_checkable_model_atomically(tmp_path):
    path = tmp_path / "m.onnx"
    model = export_onnx(random_cnn(0), path)
    assert path.read_bytes() == model.SerializeToString()
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    onnx.checker.check_model(onnx.load(path))
