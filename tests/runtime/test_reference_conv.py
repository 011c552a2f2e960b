"""Reference QConv2d/QLinear: exact int32 accumulators (vs torch float64) and both
requantization semantics (vs Python-int fixed point and IEEE float32 written out here)."""

import numpy as np
import pytest

from intq.convert import ProgramBuilder, QTensor
from intq.runtime import run_reference

from .refs import conv_acc, requant_fixed, requant_float32

CONFIGS = [
    # cin, cout, k, stride, padding (t, l, b, r), dilation, groups, bits, weight zp, dtype
    (3, 8, 3, 1, (1, 1, 1, 1), 1, 1, 8, 0, "uint8"),
    (8, 8, 3, 2, (0, 1, 2, 0), 1, 8, 8, 0, "int8"),
    (6, 12, 3, 1, (2, 2, 2, 2), 2, 3, 4, 1, "uint8"),
    (4, 4, 5, 3, (2, 1, 0, 2), 1, 4, 2, -1, "int8"),
    (5, 7, 1, 1, (0, 0, 0, 0), 1, 1, 12, 100, "int16"),
    (16, 32, 3, 1, (1, 1, 1, 1), 1, 1, 8, 0, "uint16"),
]


def _conv_program(cfg, seed):
    """A Quantize + QConv2d program and an integer input; weight scales are chosen from the
    exact accumulators so that outputs spread over about a third of the output range."""
    cin, cout, k, stride, padding, dilation, groups, bits, wzp, dtype = cfg
    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    w = rng.integers(lo, hi + 1, (cout, cin // groups, k, k))
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, (2, cin, 11, 9)).astype(dtype)
    qx = QTensor(0.03, int(rng.integers(info.min, info.max + 1)), dtype)
    span = min(200, info.max - info.min)
    qy = QTensor(0.25, info.min + 7, dtype, info.min + 3, info.min + span)
    acc = conv_acc(x, qx.zero_point, w, wzp, None, stride, padding, dilation, groups)
    spread = acc.std(axis=(0, 2, 3)) + 1
    ws = (span / 6 * qy.scale / (qx.scale * spread)).astype(np.float32)
    bias = rng.integers(-2, 3, cout) * spread.astype(np.int64)
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (2, cin, 11, 9)), qx, name="q")
    c = b.conv2d(q, w, ws, qy, bias=bias.astype(np.int32), stride=stride, padding=padding,
                 dilation=dilation, groups=groups, weight_zero_point=wzp, weight_bits=bits,
                 name="c")
    return b.build([b.dequantize(c)]), x


@pytest.mark.parametrize("cfg", CONFIGS)
@pytest.mark.parametrize("mode", ["float32_half_even", "fixed_point"])
def test_conv_matches_independent_reference(cfg, mode):
    program, x = _conv_program(cfg, seed=sum(cfg[:4]))
    op, qx, qy = program.ops[1], program.tensors["q"], program.tensors["c"]
    got = run_reference(program, {"q": x}, mode=mode, return_all=True)["c"]
    acc = conv_acc(x, qx.zero_point, op.weight, op.weight_zero_point, op.bias, op.stride,
                   op.padding, op.dilation, op.groups)
    assert np.abs(acc).max() < 2**31
    if mode == "float32_half_even":
        want = requant_float32(acc, op.requant.multiplier_f32, qy.zero_point, qy.qmin, qy.qmax)
    else:
        want = requant_fixed(acc.astype(np.int64), op.requant.m0, op.requant.shift,
                             qy.zero_point, qy.qmin, qy.qmax)
    assert got.dtype == np.dtype(qy.dtype)
    np.testing.assert_array_equal(got, want)
    assert 0.05 < np.mean((got > qy.qmin) & (got < qy.qmax)), "test data mostly clamped"


def test_linear_matches_independent_reference():
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (10, 40))
    ws = np.exp(rng.uniform(-8, -6, 10)).astype(np.float32)
    bias = rng.integers(-5000, 5000, 10).astype(np.int32)
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (3, 40)), QTensor(0.02, 128), name="q")
    y = b.linear(q, w, ws, QTensor(0.07, 120), bias=bias, weight_zero_point=-3, name="y")
    program = b.build([b.dequantize(y)])
    x = rng.integers(0, 256, (3, 40)).astype(np.uint8)
    acc = (x.astype(np.float64) - 128) @ (w.astype(np.float64) + 3).T + bias
    op = program.ops[1]
    for mode, want in [
        ("float32_half_even", requant_float32(acc, op.requant.multiplier_f32, 120, 0, 255)),
        ("fixed_point", requant_fixed(acc.astype(np.int64), op.requant.m0, op.requant.shift,
                                      120, 0, 255)),
    ]:
        got = run_reference(program, {"q": x}, mode=mode, return_all=True)["y"]
        np.testing.assert_array_equal(got, want)


def test_int32_accumulator_overflow_raises():
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (1, 64, 4, 4)), QTensor(1.0, 0, "uint16"), name="q")
    w = np.full((1, 64, 3, 3), 32767)
    c = b.conv2d(q, w, 1.0, QTensor(2.0**20, 0, "uint16"), padding=1, weight_bits=16)
    program = b.build([b.dequantize(c)])
    x = np.full((1, 64, 4, 4), 65535, np.uint16)
    with pytest.raises(ValueError, match="int32 accumulator overflow"):
        run_reference(program, {"q": x})


def test_input_channel_mismatch_names_the_op():
    program, x = _conv_program(CONFIGS[0], 0)
    with pytest.raises(ValueError, match="QConv2d -> 'c'.*3 channels"):
        run_reference(program, {"q": x[:, :2]})
