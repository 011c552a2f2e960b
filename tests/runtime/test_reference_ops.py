"""Reference pools, lossless ops, Quantize/Dequantize, float ops and feeding, each against an
independent computation (torch float64, Python fractions, numpy float64 formulas)."""

from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from intq.convert import ProgramBuilder, QTensor
from intq.runtime import run_reference

from .refs import requant_fixed, requant_float32, round_half_away, round_half_even

MODES = ["float32_half_even", "fixed_point"]


def _builder(shape, qt):
    b = ProgramBuilder()
    return b, b.quantize(b.input("x", shape), qt, name="q")


def _requant_ref(acc, op, qy, mode):
    if mode == "float32_half_even":
        return requant_float32(acc, op.requant.multiplier_f32, qy.zero_point, qy.qmin, qy.qmax)
    return requant_fixed(acc.astype(np.int64), op.requant.m0, op.requant.shift, qy.zero_point,
                         qy.qmin, qy.qmax)


@pytest.mark.parametrize("mode", MODES)
def test_avg_pool_is_count_include_pad_sum_requantized(mode):
    rng = np.random.default_rng(0)
    qx, qy = QTensor(0.05, 100), QTensor(0.04, 90)
    b, q = _builder((2, 3, 9, 8), qx)
    y = b.avg_pool2d(q, (3, 2), qy, stride=2, padding=(1, 1, 0, 1), name="y")
    program = b.build([b.dequantize(y)])
    x = rng.integers(0, 256, (2, 3, 9, 8)).astype(np.uint8)
    xc = F.pad(torch.from_numpy(x.astype(np.float64) - 100), (1, 1, 1, 0))
    acc = (F.avg_pool2d(xc, (3, 2), stride=2) * 6).round().numpy()
    want = _requant_ref(acc, program.ops[1], qy, mode)
    got = run_reference(program, {"q": x}, mode=mode, return_all=True)["y"]
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", MODES)
def test_global_avg_pool(mode):
    rng = np.random.default_rng(1)
    qx, qy = QTensor(0.05, -3, "int8"), QTensor(0.01, 5, "int8")
    b, q = _builder((2, 4, 7, 7), qx)
    y = b.global_avg_pool(q, qy, name="y")
    program = b.build([b.dequantize(y)])
    x = rng.integers(-128, 128, (2, 4, 7, 7)).astype(np.int8)
    acc = (x.astype(np.int64) + 3).sum(axis=(2, 3), keepdims=True)
    got = run_reference(program, {"q": x}, mode=mode, return_all=True)["y"]
    np.testing.assert_array_equal(got, _requant_ref(acc, program.ops[1], qy, mode))
    with pytest.raises(ValueError, match="count 49"):
        run_reference(program, {"q": x[:, :, :6]})


def test_max_pool_concat_pad_reshape_flatten_are_lossless():
    rng = np.random.default_rng(2)
    qx = QTensor(0.1, -20, "int8")
    b, q = _builder((2, 3, 9, 9), qx)
    m = b.max_pool2d(q, 3, stride=2, padding=(1, 1, 1, 0), dilation=(1, 2), name="m")
    c = b.concat([m, m], axis=1, name="c")
    p = b.pad(c, (1, 2, 0, 1), name="p")
    f = b.flatten(p, name="f")
    r = b.reshape(f, (-1, 6, 6, 6), name="r")
    program = b.build([b.dequantize(r)])
    x = rng.integers(-128, 128, (2, 3, 9, 9)).astype(np.int8)
    env = run_reference(program, {"q": x}, return_all=True)
    xt = F.pad(torch.from_numpy(x.astype(np.float64)), (1, 0, 1, 1), value=-1e9)
    want_m = F.max_pool2d(xt, 3, stride=2, dilation=(1, 2)).numpy()
    np.testing.assert_array_equal(env["m"], want_m)
    want_p = np.pad(np.concatenate([want_m, want_m], 1), ((0, 0), (0, 0), (1, 0), (2, 1)),
                    constant_values=-20)
    np.testing.assert_array_equal(env["p"], want_p)
    np.testing.assert_array_equal(env["r"], want_p.reshape(2, 6, 6, 6))
    assert all(env[n].dtype == np.int8 for n in "mcpfr")


def test_quantize_rounding_per_mode_and_clamp():
    qt = QTensor(0.5, 10, "uint8", 2, 250)
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (6,)), qt, name="q")
    program = b.build([b.dequantize(q, name="y")])
    x = np.array([0.25, -0.25, 0.75, -4.75, 1e6, -1e6], np.float32)
    for mode, rounder in [("float32_half_even", round_half_even),
                          ("fixed_point", round_half_away)]:
        env = run_reference(program, x, mode=mode, return_all=True)
        want = [min(250, max(2, rounder(Fraction(float(v)) * 2) + 10)) for v in x]
        assert env["q"].tolist() == want
        np.testing.assert_array_equal(env["y"], (np.array(want) - 10) * np.float32(0.5))
        assert env["y"].dtype == np.float32


def test_quantize_rejects_nan():
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (2,)), QTensor(0.5, 0))
    program = b.build([b.dequantize(q)])
    with pytest.raises(ValueError, match="NaN|finite"):
        run_reference(program, np.array([1.0, np.nan], np.float32))


def test_dequantize_is_one_float32_rounding():
    qt = QTensor(0.1234567, 77)
    b, q = _builder((256,), qt)
    program = b.build([b.dequantize(q, name="y")])
    q_values = np.arange(256, dtype=np.uint8)
    y = run_reference(program, {"q": q_values})["y"]
    want = [np.float32(float(Fraction(int(v) - 77) * Fraction(qt.scale))) for v in q_values]
    np.testing.assert_array_equal(y, np.array(want, np.float32))


def test_float_ops_follow_their_formulas():
    b = ProgramBuilder()
    d = b.dequantize(b.quantize(b.input("x", (3, 5)), QTensor(0.05, 128)))
    names = {op: b.float_op(d, op, name=op) for op in
             ["sigmoid", "tanh", "relu", "hardsigmoid", "hardswish"]}
    names["softmax"] = b.float_op(d, "softmax", {"axis": 0}, name="softmax")
    names["mul"] = b.float_op([d, names["tanh"]], "mul", name="mul")
    names["callable"] = b.float_op([d], "callable", fn=np.abs, name="callable")
    program = b.build(list(names.values()))
    x = np.random.default_rng(3).uniform(-6, 6, (3, 5)).astype(np.float32)
    out = run_reference(program, x, return_all=True)
    v = out[d].astype(np.float64)
    hs = np.clip(v / 6 + 0.5, 0, 1)
    want = {"sigmoid": 1 / (1 + np.exp(-v)), "tanh": np.tanh(v), "relu": np.maximum(v, 0),
            "hardsigmoid": hs, "hardswish": v * hs,
            "softmax": np.exp(v) / np.exp(v).sum(0), "mul": v * np.tanh(v), "callable": abs(v)}
    for name, ref in want.items():
        assert out[name].dtype == np.float32
        np.testing.assert_allclose(out[name], ref, rtol=3e-6, atol=3e-7, err_msg=name)


def test_feeding_an_intermediate_skips_its_producers():
    b, q = _builder((1, 2, 3, 3), QTensor(0.1, 0))
    m = b.max_pool2d(q, 2, stride=1, name="m")
    program = b.build([b.dequantize(m, name="y")])
    fed = np.arange(18, dtype=np.uint8).reshape(1, 2, 3, 3)
    env = run_reference(program, {"q": fed}, return_all=True)
    assert "x" not in env and np.array_equal(env["q"], fed)
    with pytest.raises(ValueError, match=r"needs integers in \[0, 255\]"):
        run_reference(program, {"q": fed.astype(np.float32)})
    with pytest.raises(ValueError, match="not a tensor of the program"):
        run_reference(program, {"nope": fed})
    with pytest.raises(ValueError, match="must have shape"):
        run_reference(program, np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="cannot be computed"):
        run_reference(program, {})
    with pytest.raises(ValueError, match="mode must be one of"):
        run_reference(program, {"q": fed}, mode="float64")
