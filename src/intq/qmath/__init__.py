"""Pure quantization math: integer grids, qparams, rounding, (fake-)quantize, fixed point, SQNR.

No nn.Module here; torch functions and their numpy twins (suffix `_np`) side by side. The
rounding and saturation convention of each function is in its name or first docstring line.
"""

from intq.qmath.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    multiply_by_quantized_multiplier,
    quantize_multiplier,
    requantize_fixed_point,
    requantize_float32_half_even,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
)
from intq.qmath.metrics import max_abs_error, mse, sqnr_db
from intq.qmath.qparams import (
    affine_qparams,
    qparams_from_floats,
    symmetric_qparams,
    symmetric_qparams_torch,
)
from intq.qmath.quantize import (
    ROUNDINGS,
    dequantize,
    fake_quantize,
    nudged_range,
    quantize_half_away,
    quantize_half_even,
    quantize_stochastic,
)
from intq.qmath.quantize_np import dequantize_np, quantize_half_away_np, quantize_half_even_np
from intq.qmath.ranges import MAX_BITS, MIN_BITS, qrange
from intq.qmath.rounding import (
    round_half_away,
    round_half_away_np,
    round_half_even,
    round_half_even_np,
    round_stochastic,
)

__all__ = [
    # integer grids and parameters
    "MAX_BITS",
    "MIN_BITS",
    "qrange",
    "affine_qparams",
    "qparams_from_floats",
    "symmetric_qparams",
    "symmetric_qparams_torch",
    # rounding
    "ROUNDINGS",
    "round_half_away",
    "round_half_away_np",
    "round_half_even",
    "round_half_even_np",
    "round_stochastic",
    # quantize / dequantize (torch, numpy)
    "dequantize",
    "fake_quantize",
    "nudged_range",
    "quantize_half_away",
    "quantize_half_even",
    "quantize_stochastic",
    "dequantize_np",
    "quantize_half_away_np",
    "quantize_half_even_np",
    # fixed point (gemmlowp / TFLite) and float32 (ONNX) requantization
    "INT32_MAX",
    "INT32_MIN",
    "multiply_by_quantized_multiplier",
    "quantize_multiplier",
    "requantize_fixed_point",
    "requantize_float32_half_even",
    "rounding_divide_by_pot",
    "saturating_rounding_doubling_high_mul",
    # error metrics
    "max_abs_error",
    "mse",
    "sqnr_db",
]
