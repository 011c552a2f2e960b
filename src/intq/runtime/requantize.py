"""The two integer semantics of the reference interpreter, op stage by op stage.

"float32_half_even" reproduces ONNX Runtime (x86-64 CPU, AVX2/FMA or newer) on the model that
intq.export.onnx writes, integer for integer:
    Quantize    clamp(round_half_even(float32(x) / S) + Z)            (QuantizeLinear)
    requantize  clamp(round_half_even(float32(acc)·M_f32[c]) + Z)     (QLinearConv, QGemm,
                                                                       QLinearGlobalAveragePool)
    QAdd        MLAS QLinearAdd: F = Z_y - fma(r_a, Z_a, r_b·Z_b),
                y = round_half_even(fma(a, r_a, fma(b, r_b, F))), all float32, on the uint8
                values ONNX Runtime sees (int8 tensors are exported as q + 128)
"fixed_point" is gemmlowp/TFLite:
    Quantize    clamp(round_half_away(float32(x) / S) + Z)            (TFLite Quantize)
    requantize  clamp(MultiplyByQuantizedMultiplier(acc, m0[c], shift[c]) + Z)
    QAdd        TFLite ADD: ((a - Z_a)·2^left_shift scaled by (m0_a, shift_a)) + (same for b),
                scaled by (m0_out, shift_out), + Z_y, clamped
QMul: "float32_half_even" is MLAS QLinearMul: v = float32(S_a·(a - Z_a))·float32(S_b·(b - Z_b)),
y = rint(clamp(v / S_y, dtype min - Z_y, dtype max - Z_y)) + Z_y (all float32); "fixed_point"
is TFLite MUL: MultiplyByQuantizedMultiplier((a - Z_a)(b - Z_b), m0, shift) + Z_y with
real = float32(float32(S_a·S_b) / S_y), float32 operations as in TFLite's mul.cc
(intq.convert.requant.tflite_mul_multiplier). Both then clamp to the output [qmin, qmax].
Dequantize is float32((q - Z)·S) in both. The clamp is the output QTensor's [qmin, qmax].
A float-output QLinear is float32(acc)·float32(S_x·S_w[c]) in both (`dequantize_accumulator`:
no integer rounding happens, so there is nothing for the two semantics to differ on).
The two modes agree except for rounding ties and near-ties: at most 1 LSB apart.
"""

import numpy as np

from intq.convert.program import AddRequant, QTensor, Requant
from intq.convert.requant import tflite_mul_multiplier
from intq.qmath.fixedpoint import (
    multiply_by_quantized_multiplier,
    requantize_fixed_point,
    requantize_float32_half_even,
)
from intq.qmath.quantize_np import (
    dequantize_np,
    quantize_half_away_np,
    quantize_half_even_np,
)

__all__ = [
    "MODES",
    "add",
    "dequantize",
    "dequantize_accumulator",
    "fma_float32",
    "mul",
    "quantize",
    "requantize",
]

MODES = ("fixed_point", "float32_half_even")


def quantize(x: np.ndarray, qt: QTensor, mode: str) -> np.ndarray:
    """float32 -> integer tensor of dtype qt.dtype (rounding per mode, see module docstring)."""
    rounder = quantize_half_even_np if mode == "float32_half_even" else quantize_half_away_np
    q = rounder(np.asarray(x, dtype=np.float32), np.float32(qt.scale), qt.zero_point,
                qt.qmin, qt.qmax)
    return q.astype(qt.dtype)


def dequantize(q: np.ndarray, qt: QTensor) -> np.ndarray:
    """float32((q - Z)·S): the float64 product is exact, so this is one float32 rounding."""
    return dequantize_np(q, np.float32(qt.scale), qt.zero_point).astype(np.float32)


def dequantize_accumulator(acc: np.ndarray, input_scale: float,
                           weight_scale: np.ndarray) -> np.ndarray:
    """int32 accumulators (channel axis 1, bias included) -> float32
    float32(acc)·float32(S_x·S_w[c]), as ONNX Runtime's QGemm without y_scale computes it.

    ORT (contrib_ops/cpu/quantization/quant_gemm.cc, ComputeOutputScale) multiplies the
    float32 scales in float32 (alpha = 1 is exact), adds the int32 bias into the int32 GEMM
    output, then MLAS_QGEMM_SCALE_BIAS_OUTPUT_PROCESSOR (ZeroMode) converts each int32 to
    float32 (round half even, inexact only above 2^24) and multiplies once in float32.
    """
    scale = np.float32(input_scale) * np.asarray(weight_scale, np.float32)
    per_channel = (-1,) + (1,) * (acc.ndim - 2)
    return acc.astype(np.int32).astype(np.float32) * scale.reshape(per_channel)


def requantize(acc: np.ndarray, requant: Requant, qt: QTensor, mode: str) -> np.ndarray:
    """int32 accumulators (channel axis 1) -> integer tensor of dtype qt.dtype."""
    per_channel = (-1,) + (1,) * (acc.ndim - 2)
    if mode == "float32_half_even":
        q = requantize_float32_half_even(acc, requant.multiplier_f32.reshape(per_channel),
                                         qt.zero_point, qt.qmin, qt.qmax)
    else:
        q = requantize_fixed_point(acc, requant.m0.reshape(per_channel),
                                   requant.shift.reshape(per_channel), qt.zero_point,
                                   qt.qmin, qt.qmax)
    return q.astype(qt.dtype)


def add(a: np.ndarray, b: np.ndarray, qa: QTensor, qb: QTensor, qy: QTensor,
        requant: AddRequant, mode: str) -> np.ndarray:
    """Quantized a + b rescaled to qy (see module docstring for each mode)."""
    if mode == "float32_half_even":
        return _add_float32(a, b, qa, qb, qy, requant)
    shift = np.int64(requant.left_shift)
    a_scaled = multiply_by_quantized_multiplier(
        (a.astype(np.int64) - qa.zero_point) << shift, requant.m0_a, requant.shift_a)
    b_scaled = multiply_by_quantized_multiplier(
        (b.astype(np.int64) - qb.zero_point) << shift, requant.m0_b, requant.shift_b)
    raw = a_scaled.astype(np.int64) + b_scaled
    q = requantize_fixed_point(raw, requant.m0_out, requant.shift_out, qy.zero_point,
                               qy.qmin, qy.qmax)
    return q.astype(qy.dtype)


def mul(a: np.ndarray, b: np.ndarray, qa: QTensor, qb: QTensor, qy: QTensor,
        mode: str) -> np.ndarray:
    """Quantized a·b (numpy broadcasting) on qy's grid (see module docstring for each mode)."""
    if mode == "float32_half_even":
        f32 = np.float32
        va = f32(qa.scale) * (a.astype(np.int32) - qa.zero_point).astype(f32)
        vb = f32(qb.scale) * (b.astype(np.int32) - qb.zero_point).astype(f32)
        low, high = np.iinfo(qy.dtype).min, np.iinfo(qy.dtype).max
        v = np.clip((va * vb) / f32(qy.scale), f32(low - qy.zero_point),
                    f32(high - qy.zero_point))
        q = np.rint(v).astype(np.int64) + qy.zero_point
    else:
        m0, shift = tflite_mul_multiplier(qa.scale, qb.scale, qy.scale)
        product = (a.astype(np.int64) - qa.zero_point) * (b.astype(np.int64) - qb.zero_point)
        q = multiply_by_quantized_multiplier(product, m0, shift) + np.int64(qy.zero_point)
    return np.clip(q, qy.qmin, qy.qmax).astype(qy.dtype)


def _add_float32(a, b, qa: QTensor, qb: QTensor, qy: QTensor, r: AddRequant) -> np.ndarray:
    offset = 128 if qy.dtype == "int8" else 0
    f32 = np.float32
    ra, rb = f32(r.multiplier_a_f32), f32(r.multiplier_b_f32)
    za, zb, zy = (f32(t.zero_point + offset) for t in (qa, qb, qy))
    fixed = zy - fma_float32(ra, za, rb * zb)
    inner = fma_float32(b.astype(f32) + f32(offset), rb, fixed)
    y = np.rint(fma_float32(a.astype(f32) + f32(offset), ra, inner))
    return (np.clip(y, qy.qmin + offset, qy.qmax + offset) - offset).astype(qy.dtype)


def fma_float32(a, b, c) -> np.ndarray:
    """float32 a·b + c with one rounding (half to even), as the FMA instruction computes it.

    a·b is exact in float64; s = a·b + c is rounded once in float64 with error e (TwoSum).
    Rounding s to float32 is then correct unless s lies exactly halfway between two float32
    values while e != 0; there the true value is on the side of e.
    """
    p = np.asarray(a, np.float64) * np.asarray(b, np.float64)
    c64 = np.asarray(c, np.float64)
    s = p + c64
    back = s - p
    err = (p - (s - back)) + (c64 - back)
    r = s.astype(np.float32)
    r64 = r.astype(np.float64)
    other = np.nextafter(r, np.where(s > r64, np.float32(np.inf), np.float32(-np.inf)))
    tie = (err != 0) & (s != r64) & (2 * s == r64 + other.astype(np.float64))
    nearer = np.where(err > 0, np.maximum(r, other), np.minimum(r, other))
    return np.where(tie, nearer, r).astype(np.float32)
