"""The ops of modern CNNs in LiteRT: lookup tables (CAST, ADD 128, GATHER), QMul (MUL with
broadcasting), Transpose, Slice (SLICE, STRIDED_SLICE) and ResizeNearest. LiteRT's reference
kernels (BUILTIN_REF) compute the same integers as the reference interpreter in fixed-point
mode on every tensor: synthetic programs (int8 and uint8), small torch blocks, and torchvision's
MobileNetV3-Small and ShuffleNetV2 (random weights, 64x64 natural images)."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from intq.convert import ProgramBuilder, QTensor
from intq.convert.from_graph import convert_to_program, float_islands
from intq.convert.program import QLookup, QMul, Slice, Transpose
from intq.export.tflite import export_tflite
from intq.ptq import quantize
from intq.qmath.fixedpoint import multiply_by_quantized_multiplier, quantize_multiplier
from intq.runtime import run_reference
from intq.runtime.litert import LiteRtSession
from intq.torchvision_compat import import_torchvision
from intq.zoo.natural_images import load_natural_images

from .tflite_programs import ShuffleUpsample, SqueezeExcite, tflite_modern


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _assert_identical(program, x: np.ndarray) -> LiteRtSession:
    session = LiteRtSession(export_tflite(program), ref_kernels=True, preserve_all=True)
    got = session.run_all(x)
    ref = run_reference(program, x, mode="fixed_point", return_all=True)
    for name in [*program.tensors, *program.outputs]:
        assert got[name].dtype == ref[name].dtype, name
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)
    return session


def _ops(session: LiteRtSession) -> set[str]:
    return {o["op_name"] for o in session.interpreter._get_ops_details()}


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_modern_ops_identical_under_builtin_ref(dtype):
    program = tflite_modern(1, dtype)
    x = np.random.default_rng(2).standard_normal((3, 3, 8, 8)).astype(np.float32)
    session = _assert_identical(program, x)
    assert {"GATHER", "MUL", "TRANSPOSE", "SLICE", "STRIDED_SLICE",
            "RESIZE_NEAREST_NEIGHBOR"} <= _ops(session)


def test_lookup_output_is_the_table_at_litert_input():
    """Independent of the reference interpreter: on LiteRT's own tensors, y = table[x - min]."""
    program = tflite_modern(3, "uint8")
    x = np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32) * 2
    got = LiteRtSession(export_tflite(program), ref_kernels=True, preserve_all=True).run_all(x)
    lookups = [op for op in program.ops if isinstance(op, QLookup)]
    assert len(lookups) == 2
    for op in lookups:
        codes = got[op.inputs[0]].astype(np.int64)
        assert len(np.unique(codes)) > 1, op.label
        np.testing.assert_array_equal(got[op.output], op.table[codes], err_msg=op.label)


def test_mul_multiplier_is_litert_float32_one():
    """LiteRT's MUL derives its multiplier as float(S_a·S_b) / S_y in float32 arithmetic. For
    these scales the float64 quotient moves outputs by 1 LSB (every pair of codes is tried):
    LiteRT and the reference agree, and both differ from the float64 form."""
    qa = QTensor(0.01111898198723793, -19, "int8")
    qb = QTensor(0.006521296687424183, 2, "int8")
    qy = QTensor(0.0005172738456167281, 6, "int8")
    b = ProgramBuilder()
    a = b.quantize(b.input("a", (1, 1, 256, 256)), qa)
    g = b.quantize(b.input("g", (1, 1, 256, 256)), qb)
    m = b.mul(a, g, qy)
    program = b.build([b.dequantize(m, name="y")])
    codes = np.arange(-128, 128)
    feed = {"a": np.broadcast_to(((codes - qa.zero_point) * np.float32(qa.scale)).reshape(
        1, 1, 256, 1), (1, 1, 256, 256)).astype(np.float32),
        "g": np.broadcast_to(((codes - qb.zero_point) * np.float32(qb.scale)).reshape(
            1, 1, 1, 256), (1, 1, 256, 256)).astype(np.float32)}
    session = LiteRtSession(export_tflite(program), ref_kernels=True, preserve_all=True)
    session.run_outputs(feed)
    names = {d["name"]: d["index"] for d in session.interpreter.get_tensor_details()}
    got = {n: session._read(names[n], n) for n in (a, g, m)}
    np.testing.assert_array_equal(got[a][0, 0], np.broadcast_to(codes[:, None], (256, 256)))
    np.testing.assert_array_equal(got[g][0, 0], np.broadcast_to(codes[None, :], (256, 256)))
    ref = run_reference(program, feed, mode="fixed_point", return_all=True)
    np.testing.assert_array_equal(got[m], ref[m])
    product = (codes[:, None] - qa.zero_point) * (codes[None, :] - qb.zero_point)
    real64 = np.float64(np.float32(qa.scale)) * np.float32(qb.scale) / np.float32(qy.scale)
    m0, shift = quantize_multiplier(np.array([real64]))
    float64_form = np.clip(multiply_by_quantized_multiplier(product, int(m0[0]), int(shift[0]))
                           + qy.zero_point, -128, 127)
    assert (float64_form != got[m][0, 0]).sum() >= 1


@pytest.mark.parametrize("cls, op_type", [(SqueezeExcite, QMul), (ShuffleUpsample, Slice)])
def test_torch_blocks_are_bit_exact(cls, op_type):
    torch.manual_seed(0)
    model = cls().eval()
    x = torch.randn(20, 3, 16, 16)
    program = convert_to_program(quantize(model, x[:16], progress=False), (3, 16, 16))
    assert float_islands(program) == [] and any(isinstance(op, op_type) for op in program.ops)
    _assert_identical(program, x[16:].numpy())


def _natural(split: str, n: int, size: int) -> torch.Tensor:
    x = load_natural_images(split, n).x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)


@pytest.mark.parametrize("name, op_types", [("mobilenet_v3_small", (QLookup, QMul)),
                                            ("shufflenet_v2_x0_5", (Transpose, Slice))])
def test_torchvision_model_is_bit_exact(name, op_types):
    tv = import_torchvision()
    torch.manual_seed(0)
    model = getattr(tv.models, name)().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # dead-channel notes of random weights
        qgm = quantize(model, _natural("calibration", 4, 64), progress=False)
    program = convert_to_program(qgm, (3, 64, 64))
    assert float_islands(program) == []
    for op_type in op_types:
        assert any(isinstance(op, op_type) for op in program.ops), op_type
    session = _assert_identical(program, _natural("evaluation", 2, 64).numpy())
    # channel shuffles stay NHWC: one TRANSPOSE each, none to NCHW and back
    written = [o["op_name"] for o in session.interpreter._get_ops_details()]
    assert written.count("TRANSPOSE") == sum(isinstance(op, Transpose) for op in program.ops)


def test_integer_linear_keeps_the_fixed_point_rounding():
    """An integer QLinear is written as a 1x1 CONV_2D: LiteRT's reference FULLY_CONNECTED
    computes round(double(acc)·S_x·S_w/S_y), one rounding half away from zero, which here
    differs from the program's MultiplyByQuantizedMultiplier on some values."""
    rng = np.random.default_rng(0)
    b = ProgramBuilder()
    x = b.quantize(b.input("x", (None, 16)), QTensor(0.02, 3, "int8"))
    w_scale = rng.uniform(0.5, 1.5, 64).astype(np.float32) * np.float32(0.01)
    y = b.linear(x, rng.integers(-127, 128, (64, 16)), w_scale, QTensor(0.2, -5, "int8"),
                 bias=rng.integers(-500, 500, 64))
    program = b.build([b.dequantize(y, name="out")])
    feed = rng.uniform(-2.6, 2.6, (256, 16)).astype(np.float32)
    session = _assert_identical(program, feed)
    assert "FULLY_CONNECTED" not in _ops(session)
    ref = run_reference(program, feed, mode="fixed_point", return_all=True)
    acc = (ref[x].astype(np.int64) - 3) @ program.ops[1].weight.T.astype(np.int64)
    acc += program.ops[1].bias.astype(np.int64)
    real = np.float64(np.float32(0.02)) * w_scale.astype(np.float64) / np.float64(np.float32(0.2))
    v = acc * real
    single = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) - 5, -128, 127)
    assert (single != ref[y]).sum() >= 1
