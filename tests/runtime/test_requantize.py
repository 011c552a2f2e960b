"""QAdd in both semantics and the exact float32 FMA it relies on, against Python-int TFLite
arithmetic and exact rationals."""

import numpy as np
import pytest

from intq.convert import ProgramBuilder, QTensor
from intq.runtime import run_reference
from intq.runtime.requantize import fma_float32

from .refs import fma_f32, tflite_add

f32 = np.float32


def test_fma_float32_is_correctly_rounded():
    rng = np.random.default_rng(0)
    a = rng.integers(-300, 300, 2000).astype(f32)
    b = np.exp(rng.uniform(-6, 3, 2000)).astype(f32)
    c = rng.normal(0, 100, 2000).astype(f32)
    got = fma_float32(a, b, c)
    want = np.array([fma_f32(x, y, z) for x, y, z in zip(a, b, c, strict=True)])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("sign", [1, -1])
def test_fma_float32_breaks_float64_ties_the_right_way(sign):
    # a·b = 2^-24 - 2^-70, c = 1 + 2^-23: float64 rounds a·b + c to the float32 midpoint
    # 1 + 3·2^-24, whose half-even rounding is 1 + 2^-22; the true value lies below it.
    a = f32(sign * 2.0**-12 * (1 + 2.0**-23))
    b = f32(2.0**-12 * (1 - 2.0**-23))
    c = f32(sign * (1 + 2.0**-23))
    naive = f32(np.float64(a) * np.float64(b) + np.float64(c))
    assert naive == f32(sign * (1 + 2.0**-22))
    assert fma_float32(a, b, c) == fma_f32(a, b, c) == c


def _add_program(qa, qb, qy, shape=(2, 3, 4, 5)):
    b = ProgramBuilder()
    x = b.input("x", shape)
    a_, b_ = b.quantize(x, qa, name="a"), b.quantize(x, qb, name="b")
    y = b.add(a_, b_, qy, name="y")
    return b.build([b.dequantize(y)])


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_add_fixed_point_is_tflite_add(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype)
    for _ in range(20):
        za, zb, zy = (int(v) for v in rng.integers(info.min, info.max + 1, 3))
        qa, qb = QTensor(rng.uniform(0.01, 0.1), za, dtype), QTensor(rng.uniform(0.01, 0.1), zb,
                                                                     dtype)
        qy = QTensor(rng.uniform(0.02, 0.2), zy, dtype, min(zy, info.max - 50), info.max)
        program = _add_program(qa, qb, qy)
        a = rng.integers(info.min, info.max + 1, (2, 3, 4, 5)).astype(dtype)
        bb = rng.integers(info.min, info.max + 1, (2, 3, 4, 5)).astype(dtype)
        got = run_reference(program, {"a": a, "b": bb}, mode="fixed_point", return_all=True)["y"]
        r = program.ops[2].requant
        want = [tflite_add(int(x), int(y), za, zb, zy, r, qy.qmin, qy.qmax)
                for x, y in zip(a.ravel(), bb.ravel(), strict=True)]
        assert got.ravel().tolist() == want


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_add_float32_is_mlas_formula(dtype):
    rng = np.random.default_rng(2)
    info = np.iinfo(dtype)
    off = 128 if dtype == "int8" else 0
    za, zb, zy = (int(v) for v in rng.integers(info.min, info.max + 1, 3))
    qa, qb, qy = (QTensor(s, z, dtype) for s, z in zip((0.03, 0.011, 0.05), (za, zb, zy),
                                                         strict=True))
    program = _add_program(qa, qb, qy, shape=(300,))
    a = rng.integers(info.min, info.max + 1, 300).astype(dtype)
    bb = rng.integers(info.min, info.max + 1, 300).astype(dtype)
    got = run_reference(program, {"a": a, "b": bb}, return_all=True)["y"]
    ra, rb = f32(qa.scale) / f32(qy.scale), f32(qb.scale) / f32(qy.scale)
    fixed = f32(zy + off) - fma_f32(ra, f32(za + off), rb * f32(zb + off))
    want = []
    for x, y in zip(a.tolist(), bb.tolist(), strict=True):
        t = fma_f32(f32(x + off), ra, fma_f32(f32(y + off), rb, fixed))
        want.append(int(np.clip(np.rint(t), info.min + off, info.max + off)) - off)
    assert got.tolist() == want
