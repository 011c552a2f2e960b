"""Requantization multipliers from float32 scales, derived exactly as ONNX Runtime and TFLite do.

A runtime never reads our multipliers: it recomputes them from the scales stored in the model.
So the IntProgram stores, for each requantizing op, the multiplier each runtime will derive:

| op              | float32 form (ONNX Runtime kernel)         | fixed point (TFLite, float64) |
|-----------------|--------------------------------------------|-------------------------------|
| QConv2d/QLinear | f32(f32(S_in·S_w[c]) / S_out) QLinearConv  | S_in·S_w[c] / S_out           |
| QAvgPool2d      | conv form, S_w = f32(1/(kh·kw))            | conv form, same S_w           |
| QGlobalAvgPool  | f32(S_in / f32(S_out·f32(count))) (MLAS)   | TFLite MEAN (below)           |
| QAdd            | f32(S_a / S_y), f32(S_b / S_y) QLinearAdd  | TFLite ADD, left shift 20     |

The fixed-point form is (m0, shift) = quantize_multiplier(real) with real ≈ m0·2^(shift - 31).
TFLite's int8 MEAN (reference_ops::QuantizedMeanOrSum) does not quantize S_in/(S_out·count): it
quantizes S_in/S_out, then folds 1/count in integers: e = min(floor(log2 count), 32, 31 + shift),
m0' = floor(m0·2^e / count), shift' = shift - e. QGlobalAvgPool stores that (m0', shift'), so
that the reference interpreter equals LiteRT's MEAN bit for bit.
"""

import numpy as np

from intq.convert.program import AddRequant, Requant
from intq.qmath.fixedpoint import quantize_multiplier

__all__ = [
    "add_requant",
    "avgpool_requant",
    "avgpool_weight_scale",
    "conv_requant",
    "global_avgpool_requant",
    "tflite_mean_multiplier",
    "tflite_mul_multiplier",
]


def _scale(value, name: str) -> np.float32:
    s = np.float32(value)
    if not (np.isfinite(s) and s > 0):
        raise ValueError(f"requant: {name} must be a positive finite float32, got {value!r}")
    return s


def conv_requant(input_scale: float, weight_scale, output_scale: float) -> Requant:
    """Per-channel (or per-tensor, for a length-1 weight_scale) conv/linear multipliers.

    float32: (S_in·S_w[c]) / S_out evaluated in float32, left to right (QLinearConv, QGemm).
    fixed point: float64 S_in·S_w[c] / S_out (TFLite PopulateConvolutionQuantizationParams).
    """
    s_in, s_out = _scale(input_scale, "input_scale"), _scale(output_scale, "output_scale")
    s_w = np.atleast_1d(np.asarray(weight_scale, dtype=np.float32))
    if s_w.ndim != 1 or not (np.isfinite(s_w).all() and (s_w > 0).all()):
        raise ValueError("conv_requant: weight_scale must be positive finite, 1-D or scalar")
    mult = (s_in * s_w) / s_out
    m0, shift = quantize_multiplier(np.float64(s_in) * s_w.astype(np.float64) / np.float64(s_out))
    return Requant(mult.astype(np.float32), m0, shift)


def avgpool_weight_scale(count: int) -> np.float32:
    """float32(1 / count): the scale of the all-ones depthwise kernel that an average pool is."""
    return np.float32(1.0 / count)


def avgpool_requant(input_scale: float, count: int, output_scale: float) -> Requant:
    """Average pool over `count` = kh·kw taps as a depthwise conv with weights 1 of scale
    float32(1/count): conv_requant(S_in, float32(1/count), S_out)."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"avgpool_requant: count must be an int >= 1, got {count!r}")
    return conv_requant(input_scale, avgpool_weight_scale(count), output_scale)


def global_avgpool_requant(input_scale: float, count: int, output_scale: float) -> Requant:
    """Global average pool over `count` = H·W pixels.

    float32: S_in / (S_out·float32(count)) in float32 (MLAS QLinearGlobalAveragePool).
    fixed point: TFLite MEAN's multiplier, see tflite_mean_multiplier.
    """
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"global_avgpool_requant: count must be an int >= 1, got {count!r}")
    s_in, s_out = _scale(input_scale, "input_scale"), _scale(output_scale, "output_scale")
    mult = s_in / (s_out * np.float32(count))
    m0, shift = tflite_mean_multiplier(s_in, s_out, count)
    return Requant(np.array([mult], dtype=np.float32), np.array([m0]), np.array([shift]))


def tflite_mean_multiplier(input_scale, output_scale, count: int) -> tuple[int, int]:
    """(m0, shift) of TFLite's int8 MEAN over `count` values, integer division truncating.

    (m0, shift) = quantize_multiplier(float64 S_in / S_out); e = min(floor(log2 count), 32,
    31 + shift); returns (floor(m0·2^e / count), shift - e) (reduce.h QuantizedMeanOrSum).
    """
    m0, shift = quantize_multiplier(np.array([np.float64(np.float32(input_scale))
                                              / np.float64(np.float32(output_scale))]))
    m0, shift = int(m0[0]), int(shift[0])
    e = min(count.bit_length() - 1, 32, 31 + shift)
    return (m0 << e) // count, shift - e


def tflite_mul_multiplier(a_scale, b_scale, output_scale) -> tuple[int, int]:
    """(m0, shift) of TFLite's int8 MUL: quantize_multiplier(float32(float32(S_a·S_b) / S_y)).

    mul.cc computes `input1->params.scale * input2->params.scale / output->params.scale` on
    float fields, so the product and the quotient are float32 operations, only the result is
    widened to double; the float64 quotient gives another m0 in its last 7 bits, which moves
    a few outputs by 1 LSB for about one scale triple in a thousand."""
    f32 = np.float32
    real = np.float64((f32(a_scale) * f32(b_scale)) / f32(output_scale))
    m0, shift = quantize_multiplier(np.array([real]))
    return int(m0[0]), int(shift[0])


def add_requant(a_scale: float, b_scale: float, output_scale: float, bits: int = 8) -> AddRequant:
    """QAdd multipliers (see AddRequant).

    float32: f32(S_a / S_y), f32(S_b / S_y) (ONNX Runtime QLinearAdd).
    fixed point (TFLite ADD): left_shift = 20 for 8-bit, 15 for 16-bit tensors;
    twice_max = 2·max(S_a, S_b); inputs scaled by S_a/twice_max and S_b/twice_max, the sum by
    twice_max / (2^left_shift·S_y), all in float64.
    """
    if bits not in (8, 16):
        raise ValueError(f"add_requant: bits must be 8 or 16, got {bits!r}")
    s_a, s_b = _scale(a_scale, "a_scale"), _scale(b_scale, "b_scale")
    s_y = _scale(output_scale, "output_scale")
    left_shift = 20 if bits == 8 else 15
    twice_max = 2.0 * float(max(s_a, s_b))
    real = np.array([float(s_a) / twice_max, float(s_b) / twice_max,
                     twice_max / (2.0**left_shift * float(s_y))])
    m0, shift = quantize_multiplier(real)
    return AddRequant(
        multiplier_a_f32=float(s_a / s_y), multiplier_b_f32=float(s_b / s_y),
        left_shift=left_shift, m0_a=int(m0[0]), shift_a=int(shift[0]), m0_b=int(m0[1]),
        shift_b=int(shift[1]), m0_out=int(m0[2]), shift_out=int(shift[2]))
