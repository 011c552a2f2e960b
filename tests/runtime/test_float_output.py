"""The float-output QLinear in the reference interpreter: float32(acc)·float32(S_x·S_w[c]),
the int32 accumulator including the bias, checked against Python-int accumulators and float64
arithmetic that rounds to float32 once per step (the steps ONNX Runtime takes)."""

import numpy as np
import pytest

from intq.convert import ProgramBuilder, QTensor
from intq.runtime import run_reference
from intq.runtime.requantize import MODES

f32, f64 = np.float32, np.float64


def _expected(x, zx: int, w, zw: int, bias, sx: float, sw) -> np.ndarray:
    """Python-int accumulators; float32(acc) and float32(S_x·S_w) are single roundings of exact
    values (|acc| < 2^31 and products of two float32 are exact in float64)."""
    out = np.empty((len(x), len(w)), f32)
    for n, row in enumerate(x.tolist()):
        for c, wrow in enumerate(w.tolist()):
            acc = sum((a - zx) * (b - zw) for a, b in zip(row, wrow, strict=True)) + int(bias[c])
            scale = f32(f64(f32(sx)) * f64(f32(sw[c % len(sw)])))
            out[n, c] = f32(f64(f32(f64(acc))) * f64(scale))
    return out


def _program(w, w_scale, bias, x_qt: QTensor, weight_zero_point: int = 0):
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (None, w.shape[1])), x_qt, name="q")
    y = b.linear(q, w, w_scale, None, bias=bias, weight_zero_point=weight_zero_point, name="y")
    return b.build([y])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("per_channel", [True, False])
def test_float_output_is_float32_acc_times_float32_scale(mode, per_channel):
    """Random int8 data with biases that push |acc| past 2^24, where float32(acc) rounds
    (half to even): equal to the expected float32 values bit for bit, in both modes."""
    rng = np.random.default_rng(1 + per_channel)
    w = rng.integers(-127, 128, (24, 64))
    w_scale = rng.uniform(1e-4, 1e-2, 24 if per_channel else 1).astype(f32)
    bias = rng.integers(-2**20, 2**20, 24)
    bias[:8] = rng.integers(2**25, 2**29, 8) * rng.choice([-1, 1], 8)
    x_qt = QTensor(0.0371, -5, "int8")
    program = _program(w, w_scale, bias, x_qt, weight_zero_point=0)
    q = rng.integers(-128, 128, (6, 64)).astype(np.int8)
    got = run_reference(program, {"q": q}, mode=mode)["y"]
    assert got.dtype == f32
    np.testing.assert_array_equal(got, _expected(q, -5, w, 0, bias, x_qt.scale, w_scale))


def test_weight_zero_point_and_no_bias():
    rng = np.random.default_rng(3)
    w = rng.integers(-60, 60, (5, 9))
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (None, 9)), QTensor(0.25, 7, "uint8"), name="q")
    y = b.linear(q, w, f32(0.003), None, weight_zero_point=-3, name="y")
    program = b.build([y])
    x = rng.integers(0, 256, (4, 9)).astype(np.uint8)
    got = run_reference(program, {"q": x})["y"]
    np.testing.assert_array_equal(got, _expected(x, 7, w, -3, np.zeros(5, int), 0.25, [0.003]))


def test_accumulator_overflow_is_still_refused():
    w = np.full((1, 2), 127)
    program = _program(w, f32(0.1), np.array([2**31 - 200]), QTensor(1.0, 0, "int8"))
    with pytest.raises(ValueError, match="int32 accumulator overflow"):
        run_reference(program, {"q": np.full((1, 2), 127, np.int8)})
