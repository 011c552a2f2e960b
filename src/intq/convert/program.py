"""IntProgram: the deployable integer model, a topologically ordered list of integer ops.

Everything downstream (reference interpreter, ONNX and TFLite writers) reads only this. It is
plain frozen dataclasses + numpy arrays, validated at construction (ValueError naming the op).

Tensors
    Ops read and write *named* tensors. A name listed in `IntProgram.tensors` is an integer
    activation tensor with a `QTensor` (real = scale·(q - zero_point)); every other name is a
    float32 tensor (program inputs, Dequantize/FloatOp/float-output QLinear outputs, and
    Reshape/Flatten of those). Shapes are NCHW (or NC after Flatten/QLinear) and are not
    stored except for the program inputs; the interpreter checks them when it runs. Scales
    are float32 values (what ONNX and TFLite store).

    `QTensor.qmin/qmax` is the clamp applied by the op that writes the tensor (Quantize and the
    requantizing ops): a fused ReLU is qmin = zero_point, a fused ReLU6 is additionally
    qmax = min(dtype max, zero_point + round(6/scale)). Lossless ops (QConcat, QMaxPool2d,
    Reshape, Flatten, Pad) apply no clamp: their output must have the input's scale,
    zero_point and dtype, and a [qmin, qmax] that contains the input's.

Activation dtypes
    "uint8" or "int8" for deployment; "uint16"/"int16" run in the reference interpreter only.
    ONNX Runtime: the exporter writes uint8 (an int8 tensor q becomes q + 128 with zero point
    + 128, which is lossless). TFLite: int8. The converter may pick either.

Weights
    Signed integers of `weight_bits` (2..16) bits, in [-2^(b-1), 2^(b-1) - 1], with one
    `weight_zero_point` per tensor (0 = symmetric, the default) and float32 `weight_scale` of
    shape (1,) (per tensor) or (out_channels,) (per channel). Bias is int32 with scale
    S_in·S_w[c] and zero point 0, added to the accumulator.

Requantization
    Each requantizing op stores its multipliers in both forms (`Requant`, `AddRequant`):
    float32 multipliers for the ONNX Runtime semantics and (m0, shift) int32 pairs with
    real ≈ m0·2^(shift - 31) for the gemmlowp/TFLite semantics. Build them with the functions
    in `intq.convert.requant` (or let `ProgramBuilder` do it): they reproduce how ONNX Runtime
    and TFLite derive multipliers from the float32 scales, so exporters stay exact.
    A float-output QLinear (requant None) has no requantization: its float32 output scale
    S_x·S_w[c] is derived from the stored scales, as ONNX Runtime does.

Ops (`inputs -> output`; "int" = integer tensor with QTensor, "float" = float32 tensor)
    Quantize        float -> int   q = clamp(round(x / S) + Z, qmin, qmax)
    Dequantize      int -> float   x = (q - Z)·S
    QConv2d         int -> int     acc = Σ (x - Zx)(w - Zw) + bias, padding with Zx;
                                   y = clamp(Zy + requant(acc)[c], qmin, qmax)
    QLinear         int (N, K) -> int (N, O), same arithmetic as a 1x1 conv; or, with
                    requant=None, int (N, K) -> float (N, O), the int32 accumulator (bias
                    included) dequantized: y = float32(acc)·float32(S_x·S_w[c]), the scale
                    being the float32 product of the two float32 scales, then one float32
                    multiply (ONNX Runtime QGemm without y_scale). No output rounding, no clamp.
    QAdd            int, int -> int  each input rescaled to the output scale (see AddRequant)
    QConcat         int... -> int  along `axis`, shared qparams
    QAvgPool2d      int -> int     acc = Σ_window (x - Zx), padding with Zx, divisor kh·kw
                                   (PyTorch count_include_pad=True, floor mode), requantized
    QGlobalAvgPool  int -> int     acc = Σ_HW (x - Zx), requantized; H·W must equal `count`
    QMaxPool2d      int -> int     window max, padding never selected, shared qparams
    Reshape         int -> int     `shape` may hold one -1; shared qparams (float -> float
                                   too: the output has its input's kind)
    Flatten         int -> int     (N, C, H, W) -> (N, C·H·W); shared qparams (float -> float too)
    Pad             int -> int     constant padding of H/W with the zero point
    FloatOp         float... -> float  a float fallback, see FLOAT_OPS
    FloatSubgraph   float... -> float  a float island: an ONNX graph (serialized ModelProto,
                                   float32 inputs in order, one float32 output) for an op
                                   without an integer form; `source` says which and why
    QLookup         int -> int     y = table[q - dtype min]: any elementwise function of one
                                   8-bit tensor as a 256-entry table (TFLite's approach),
                                   computed once from the real values of all 256 codes
    QMul            int, int -> int  y = clamp(Zy + round_half_even(float32(Sa·(a - Za))·
                                   float32(Sb·(b - Zb)) / Sy)), numpy broadcasting (ONNX
                                   Runtime's QLinearMul, MLAS qlmul.cpp)
    Transpose       int -> int     axes permuted by `perm`; shared qparams (float too)
    Slice           int -> int     x[start:stop:step] along `axis`; shared qparams (float too)
    ResizeNearest   int -> int     nearest upsampling of H, W by integer factors; shared

Padding tuples are (top, left, bottom, right); strides, dilations and kernels are (h, w).
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType

import numpy as np

__all__ = [
    "ACTIVATION_DTYPES",
    "FLOAT_OPS",
    "AddRequant",
    "Dequantize",
    "Flatten",
    "FloatOp",
    "FloatSubgraph",
    "Input",
    "IntProgram",
    "Op",
    "Pad",
    "QAdd",
    "QAvgPool2d",
    "QConcat",
    "QConv2d",
    "QGlobalAvgPool",
    "QLinear",
    "QLookup",
    "QMaxPool2d",
    "QMul",
    "QTensor",
    "Quantize",
    "Requant",
    "Reshape",
    "ResizeNearest",
    "Slice",
    "Transpose",
]

ACTIVATION_DTYPES: Mapping[str, tuple[int, int]] = MappingProxyType({
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
})

#: FloatOp names -> number of inputs. "callable" runs `fn` (reference interpreter only).
#: sigmoid, tanh, relu: elementwise; hardsigmoid: relu6(x + 3) / 6; hardswish: x·hardsigmoid(x);
#: softmax: along attrs["axis"] (default -1); add, mul: elementwise with numpy broadcasting.
FLOAT_OPS: Mapping[str, int | None] = MappingProxyType({
    "sigmoid": 1, "tanh": 1, "relu": 1, "hardsigmoid": 1, "hardswish": 1, "softmax": 1,
    "add": 2, "mul": 2, "callable": None,
})

_INT32 = (-(2**31), 2**31 - 1)


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _frozen_array(values, dtype, what: str) -> np.ndarray:
    """A read-only copy of `values` as `dtype`; integer/float kinds must already match."""
    a = np.asarray(values)
    want = np.dtype(dtype)
    integer = want.kind in "iu"
    if a.dtype.kind not in ("iu" if integer else "f"):
        raise ValueError(f"{what}: expected {'integer' if integer else 'float'} values, "
                         f"got dtype {a.dtype}")
    if want.kind in "iu" and a.size:
        info = np.iinfo(want)
        if a.min() < info.min or a.max() > info.max:
            raise ValueError(f"{what}: values must fit {want}, got [{a.min()}, {a.max()}]")
    out = a.astype(want, copy=True)
    out.flags.writeable = False
    return out


def _pair(value, what: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if _is_int(value) else tuple(value)
    if len(pair) != 2 or not all(_is_int(v) and v >= minimum for v in pair):
        raise ValueError(f"{what}: expected an int or (h, w) pair of ints >= {minimum}, "
                         f"got {value!r}")
    return int(pair[0]), int(pair[1])


def _padding(value, what: str) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) from an int, an (h, w) pair or a 4-tuple."""
    if _is_int(value) or len(tuple(value)) == 2:
        h, w = _pair(value, what, 0)
        return h, w, h, w
    pads = tuple(value)
    if len(pads) != 4 or not all(_is_int(v) and v >= 0 for v in pads):
        raise ValueError(f"{what}: expected (top, left, bottom, right) ints >= 0, got {value!r}")
    return tuple(int(v) for v in pads)


def _set(obj, name: str, value) -> None:
    object.__setattr__(obj, name, value)


class _ArrayEq:
    """Field-wise equality where numpy arrays compare by dtype, shape and values."""

    def __eq__(self, other) -> bool:
        if type(self) is not type(other):
            return NotImplemented
        return all(_values_equal(getattr(self, f.name), getattr(other, f.name))
                   for f in fields(self))

    __hash__ = None


def _values_equal(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.dtype == b.dtype
                and a.shape == b.shape and bool(np.array_equal(a, b)))
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(_values_equal(a[k], b[k]) for k in a)
    return a == b


@dataclass(frozen=True)
class QTensor:
    """Quantization of one integer tensor: real = scale·(q - zero_point), q in [qmin, qmax].

    `scale` is rounded to the nearest float32; qmin/qmax default to the dtype range.
    """

    scale: float
    zero_point: int
    dtype: str = "uint8"
    qmin: int | None = None
    qmax: int | None = None

    def __post_init__(self):
        if self.dtype not in ACTIVATION_DTYPES:
            raise ValueError(f"QTensor: dtype must be one of {list(ACTIVATION_DTYPES)}, "
                             f"got {self.dtype!r}")
        lo, hi = ACTIVATION_DTYPES[self.dtype]
        scale = float(np.float32(self.scale))
        if not (np.isfinite(scale) and scale >= float(np.finfo(np.float32).tiny)):
            raise ValueError(f"QTensor: scale must be a positive normal float32, got {self.scale}")
        _set(self, "scale", scale)
        qmin = lo if self.qmin is None else self.qmin
        qmax = hi if self.qmax is None else self.qmax
        for name, value in (("zero_point", self.zero_point), ("qmin", qmin), ("qmax", qmax)):
            if not _is_int(value):
                raise ValueError(f"QTensor: {name} must be an int, got {value!r}")
        if not lo <= qmin <= self.zero_point <= qmax <= hi or qmin == qmax:
            raise ValueError(f"QTensor: need {lo} <= qmin <= zero_point <= qmax <= {hi} and "
                             f"qmin < qmax for {self.dtype}, got qmin={qmin}, "
                             f"zero_point={self.zero_point}, qmax={qmax}")
        _set(self, "zero_point", int(self.zero_point))
        _set(self, "qmin", int(qmin))
        _set(self, "qmax", int(qmax))

    def same_qparams(self, other: "QTensor") -> bool:
        """True when scale, zero point and dtype are identical (lossless ops need this)."""
        return (self.scale, self.zero_point, self.dtype) == (
            other.scale, other.zero_point, other.dtype)


@dataclass(frozen=True, eq=False)
class Requant(_ArrayEq):
    """Per-channel requantization multipliers M[c] (length 1 = per tensor), in two forms.

    multiplier_f32: float32, the ONNX Runtime form (y = round_half_even(float32(acc)·M)).
    m0, shift: int32 with M ≈ m0·2^(shift - 31) (gemmlowp/TFLite MultiplyByQuantizedMultiplier).
    """

    multiplier_f32: np.ndarray
    m0: np.ndarray
    shift: np.ndarray

    def __post_init__(self):
        mult = _frozen_array(self.multiplier_f32, np.float32, "Requant.multiplier_f32")
        m0 = _frozen_array(self.m0, np.int32, "Requant.m0")
        shift = _frozen_array(self.shift, np.int32, "Requant.shift")
        if not (mult.ndim == m0.ndim == shift.ndim == 1 and len(mult) == len(m0) == len(shift)
                and len(mult) >= 1):
            raise ValueError(f"Requant: multiplier_f32, m0 and shift must be 1-D of one length, "
                             f"got shapes {mult.shape}, {m0.shape}, {shift.shape}")
        if not (np.isfinite(mult).all() and (mult > 0).all()):
            raise ValueError("Requant: multiplier_f32 must be finite and > 0")
        if (m0 < 0).any() or (shift < -31).any() or (shift > 30).any():
            raise ValueError("Requant: need m0 >= 0 and shift in [-31, 30]")
        _set(self, "multiplier_f32", mult)
        _set(self, "m0", m0)
        _set(self, "shift", shift)

    @property
    def channels(self) -> int:
        return len(self.m0)


@dataclass(frozen=True)
class AddRequant:
    """QAdd multipliers: ONNX Runtime float32 ratios and TFLite's fixed-point add parameters.

    Float form (ONNX Runtime QLinearAdd): multiplier_a_f32 = float32(S_a / S_y), same for b.
    Fixed form (TFLite ADD): inputs shifted left by `left_shift` (20 for 8 bits), each scaled
    by (m0_a, shift_a), (m0_b, shift_b) to a common scale 2·max(S_a, S_b) / 2^left_shift, summed
    and scaled by (m0_out, shift_out). Shifts follow Requant's convention.
    """

    multiplier_a_f32: float
    multiplier_b_f32: float
    left_shift: int
    m0_a: int
    shift_a: int
    m0_b: int
    shift_b: int
    m0_out: int
    shift_out: int

    def __post_init__(self):
        for name in ("multiplier_a_f32", "multiplier_b_f32"):
            value = float(np.float32(getattr(self, name)))
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"AddRequant: {name} must be finite and > 0, got {value}")
            _set(self, name, value)
        if not _is_int(self.left_shift) or not 0 <= self.left_shift <= 30:
            raise ValueError(f"AddRequant: left_shift must be an int in [0, 30], "
                             f"got {self.left_shift!r}")
        for stem in ("a", "b", "out"):
            m0, shift = getattr(self, f"m0_{stem}"), getattr(self, f"shift_{stem}")
            if not (_is_int(m0) and _is_int(shift) and 0 <= m0 < 2**31 and -31 <= shift <= 30):
                raise ValueError(f"AddRequant: need int m0_{stem} in [0, 2^31) and shift_{stem} "
                                 f"in [-31, 30], got {m0!r}, {shift!r}")
            _set(self, f"m0_{stem}", int(m0))
            _set(self, f"shift_{stem}", int(shift))
        _set(self, "left_shift", int(self.left_shift))


class Op:
    """Base of all ops: `inputs` and `output` are tensor names.

    `float_inputs`, `float_output` say which side is float (class attributes; QLinear's
    `float_output` depends on its requant); `float_io(tensors)` is what validation uses, and
    lets Reshape/Flatten take the kind of their input.
    `check(tensors)` validates the op against the QTensors of its integer inputs/output.
    """

    float_inputs = False
    float_output = False
    inputs: tuple[str, ...]
    output: str

    def float_io(self, tensors: Mapping[str, QTensor]) -> tuple[bool, bool]:
        """(inputs are float, output is float) in a program whose integer tensors are
        `tensors` (inputs must be known there already)."""
        return self.float_inputs, self.float_output

    def check(self, tensors: Mapping[str, QTensor]) -> None:
        """Op-specific constraints on qparams; the default accepts anything."""

    @property
    def label(self) -> str:
        return f"{type(self).__name__} -> {self.output!r}"


def _names(obj, single: str | None = None) -> None:
    """Normalize `inputs` to a tuple of non-empty strings and check `output`."""
    names = (single,) if single is not None else tuple(obj.inputs)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError(f"{type(obj).__name__}: inputs must be non-empty strings, got {names!r}")
    if not isinstance(obj.output, str) or not obj.output:
        raise ValueError(f"{type(obj).__name__}: output must be a non-empty string, "
                         f"got {obj.output!r}")
    _set(obj, "inputs", names)


def _require_shared(op: Op, tensors: Mapping[str, QTensor]) -> None:
    if op.output not in tensors:  # a float Reshape/Flatten: no qparams to share
        return
    out = tensors[op.output]
    for name in op.inputs:
        src = tensors[name]
        if not out.same_qparams(src) or src.qmin < out.qmin or src.qmax > out.qmax:
            raise ValueError(f"{op.label}: lossless op needs the input {name!r} and the output "
                             f"to share scale, zero point and dtype, with the output [qmin, qmax] "
                             f"containing the input's; got {src} and {out}")


@dataclass(frozen=True, init=False)
class Quantize(Op):
    """float -> int per tensor: q = clamp(round(x / S) + Z, qmin, qmax) (rounding per mode)."""

    inputs: tuple[str, ...]
    output: str
    float_inputs = True

    def __init__(self, input: str, output: str):
        _set(self, "output", output)
        _names(self, input)


@dataclass(frozen=True, init=False)
class Dequantize(Op):
    """int -> float: x = float32(q - Z)·S."""

    inputs: tuple[str, ...]
    output: str
    float_output = True

    def __init__(self, input: str, output: str):
        _set(self, "output", output)
        _names(self, input)


class _KindOfInput:
    """Mixin of the shape-only ops (Reshape, Flatten): integer in, integer out with shared
    qparams; float in, float out."""

    def float_io(self, tensors: Mapping[str, QTensor]) -> tuple[bool, bool]:
        floating = self.inputs[0] not in tensors
        return floating, floating


def _check_weights(op, kind: str, float_output_allowed: bool = False) -> None:
    """Shared validation of weight, weight_scale, weight_zero_point, bias and requant
    (None = float output, where `float_output_allowed`)."""
    bits = op.weight_bits
    if not _is_int(bits) or not 2 <= bits <= 16:
        raise ValueError(f"{kind}: weight_bits must be an int in 2..16, got {bits!r}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    raw = np.asarray(op.weight)
    if raw.dtype.kind in "iu" and raw.size and (raw.min() < lo or raw.max() > hi):
        raise ValueError(f"{kind}: {bits}-bit weights must lie in [{lo}, {hi}], got "
                         f"[{raw.min()}, {raw.max()}]")
    weight = _frozen_array(raw, np.int8 if bits <= 8 else np.int16, f"{kind}.weight")
    if not _is_int(op.weight_zero_point) or not lo <= op.weight_zero_point <= hi:
        raise ValueError(f"{kind}: weight_zero_point must be an int in [{lo}, {hi}], "
                         f"got {op.weight_zero_point!r}")
    out_channels = weight.shape[0]
    scale = _frozen_array(np.atleast_1d(op.weight_scale), np.float32, f"{kind}.weight_scale")
    if scale.ndim != 1 or len(scale) not in (1, out_channels):
        raise ValueError(f"{kind}: weight_scale must have shape (1,) or ({out_channels},), "
                         f"got {scale.shape}")
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        raise ValueError(f"{kind}: weight_scale must be finite and > 0")
    if op.bias is not None:
        bias = _frozen_array(op.bias, np.int32, f"{kind}.bias")
        if bias.shape != (out_channels,):
            raise ValueError(f"{kind}: bias must have shape ({out_channels},), got {bias.shape}")
        _set(op, "bias", bias)
    if not (op.requant is None and float_output_allowed):
        _check_requant(op.requant, out_channels, len(scale), kind, float_output_allowed)
    _set(op, "weight", weight)
    _set(op, "weight_scale", scale)
    _set(op, "weight_zero_point", int(op.weight_zero_point))


def _check_requant(requant, out_channels: int, scales: int, kind: str,
                   none_allowed: bool) -> None:
    if not isinstance(requant, Requant) or requant.channels not in (1, out_channels):
        none = " (or None for a float output)" if none_allowed else ""
        raise ValueError(f"{kind}: requant must be a Requant with 1 or {out_channels} "
                         f"channels{none}")
    if requant.channels != scales and scales != 1:
        raise ValueError(f"{kind}: per-channel weight_scale needs per-channel requant")


@dataclass(frozen=True, eq=False, init=False)
class QConv2d(_ArrayEq, Op):
    """Integer conv: weight (O, I/groups, kh, kw); see the module docstring for the formula."""

    inputs: tuple[str, ...]
    output: str
    weight: np.ndarray
    weight_scale: np.ndarray
    requant: Requant
    bias: np.ndarray | None = None
    weight_zero_point: int = 0
    weight_bits: int = 8
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def __init__(self, input: str, output: str, weight, weight_scale, requant: Requant, *,
                 bias=None, weight_zero_point: int = 0, weight_bits: int = 8, stride=1,
                 padding=0, dilation=1, groups: int = 1):
        for name, value in (("output", output), ("weight", weight),
                            ("weight_scale", weight_scale), ("requant", requant), ("bias", bias),
                            ("weight_zero_point", weight_zero_point),
                            ("weight_bits", weight_bits), ("groups", groups)):
            _set(self, name, value)
        _names(self, input)
        if np.ndim(weight) != 4:
            raise ValueError(f"QConv2d {output!r}: weight must be 4-D (O, I/groups, kh, kw), "
                             f"got shape {np.shape(weight)}")
        _check_weights(self, f"QConv2d {output!r}")
        _set(self, "stride", _pair(stride, f"QConv2d {output!r} stride", 1))
        _set(self, "padding", _padding(padding, f"QConv2d {output!r} padding"))
        _set(self, "dilation", _pair(dilation, f"QConv2d {output!r} dilation", 1))
        if not _is_int(groups) or groups < 1 or self.weight.shape[0] % groups:
            raise ValueError(f"QConv2d {output!r}: groups must be an int >= 1 dividing the "
                             f"{self.weight.shape[0]} output channels, got {groups!r}")
        _set(self, "groups", int(groups))


@dataclass(frozen=True, eq=False, init=False)
class QLinear(_ArrayEq, Op):
    """Integer fully connected layer: input (N, K), weight (O, K), output (N, O); an integer
    output requantized by `requant`, or with requant=None a float32 output
    float32(acc)·float32(S_x·S_w[c]) (see the module docstring)."""

    inputs: tuple[str, ...]
    output: str
    weight: np.ndarray
    weight_scale: np.ndarray
    requant: Requant | None
    bias: np.ndarray | None = None
    weight_zero_point: int = 0
    weight_bits: int = 8

    def __init__(self, input: str, output: str, weight, weight_scale, requant: Requant | None,
                 *, bias=None, weight_zero_point: int = 0, weight_bits: int = 8):
        for name, value in (("output", output), ("weight", weight),
                            ("weight_scale", weight_scale), ("requant", requant), ("bias", bias),
                            ("weight_zero_point", weight_zero_point),
                            ("weight_bits", weight_bits)):
            _set(self, name, value)
        _names(self, input)
        if np.ndim(weight) != 2:
            raise ValueError(f"QLinear {output!r}: weight must be 2-D (O, K), "
                             f"got shape {np.shape(weight)}")
        _check_weights(self, f"QLinear {output!r}", float_output_allowed=True)

    @property
    def float_output(self) -> bool:
        """True for the float-output form (requant None)."""
        return self.requant is None


@dataclass(frozen=True, init=False)
class QAdd(Op):
    """y = a + b with each input rescaled to the output scale; fused ReLU via output qmin/qmax."""

    inputs: tuple[str, ...]
    output: str
    requant: AddRequant

    def __init__(self, a: str, b: str, output: str, requant: AddRequant):
        _set(self, "inputs", (a, b))
        _set(self, "output", output)
        _set(self, "requant", requant)
        _names(self)
        if not isinstance(requant, AddRequant):
            raise ValueError(f"QAdd {output!r}: requant must be an AddRequant")

    def check(self, tensors):
        dtypes = {tensors[n].dtype for n in (*self.inputs, self.output)}
        if len(dtypes) != 1:
            raise ValueError(f"{self.label}: inputs and output must share one dtype, "
                             f"got {sorted(dtypes)}")


@dataclass(frozen=True, init=False)
class QConcat(Op):
    """Concatenate along `axis` (NCHW: 1 = channels); inputs and output share qparams."""

    inputs: tuple[str, ...]
    output: str
    axis: int = 1

    def __init__(self, inputs, output: str, axis: int = 1):
        _set(self, "inputs", inputs)
        _set(self, "output", output)
        _names(self)
        if not _is_int(axis):
            raise ValueError(f"QConcat {output!r}: axis must be an int, got {axis!r}")
        _set(self, "axis", int(axis))

    check = _require_shared


@dataclass(frozen=True, eq=False, init=False)
class QAvgPool2d(_ArrayEq, Op):
    """Average pool: Σ_window (x - Zx) (padding counts as Zx) requantized with S_in/(S_out·kh·kw)
    in the form of `intq.convert.requant.avgpool_requant`."""

    inputs: tuple[str, ...]
    output: str
    kernel: tuple[int, int]
    requant: Requant
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __init__(self, input: str, output: str, kernel, requant: Requant, *, stride=None,
                 padding=0):
        _set(self, "output", output)
        _names(self, input)
        _set(self, "kernel", _pair(kernel, f"QAvgPool2d {output!r} kernel", 1))
        _set(self, "stride", _pair(self.kernel if stride is None else stride,
                                   f"QAvgPool2d {output!r} stride", 1))
        _set(self, "padding", _padding(padding, f"QAvgPool2d {output!r} padding"))
        if not isinstance(requant, Requant) or requant.channels != 1:
            raise ValueError(f"QAvgPool2d {output!r}: requant must be a per-tensor Requant")
        _set(self, "requant", requant)


@dataclass(frozen=True, eq=False, init=False)
class QGlobalAvgPool(_ArrayEq, Op):
    """(N, C, H, W) -> (N, C, 1, 1): Σ_HW (x - Zx) requantized with S_in/(S_out·count),
    count = H·W, in the form of `intq.convert.requant.global_avgpool_requant`."""

    inputs: tuple[str, ...]
    output: str
    count: int
    requant: Requant

    def __init__(self, input: str, output: str, count: int, requant: Requant):
        _set(self, "output", output)
        _names(self, input)
        if not _is_int(count) or count < 1:
            raise ValueError(f"QGlobalAvgPool {output!r}: count must be an int >= 1 (H·W), "
                             f"got {count!r}")
        if not isinstance(requant, Requant) or requant.channels != 1:
            raise ValueError(f"QGlobalAvgPool {output!r}: requant must be a per-tensor Requant")
        _set(self, "count", int(count))
        _set(self, "requant", requant)


@dataclass(frozen=True, init=False)
class QMaxPool2d(Op):
    """Max pool (floor mode); padded positions are never the maximum. Shared qparams."""

    inputs: tuple[str, ...]
    output: str
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)

    def __init__(self, input: str, output: str, kernel, *, stride=None, padding=0, dilation=1):
        _set(self, "output", output)
        _names(self, input)
        where = f"QMaxPool2d {output!r}"
        _set(self, "kernel", _pair(kernel, f"{where} kernel", 1))
        _set(self, "stride", _pair(self.kernel if stride is None else stride,
                                   f"{where} stride", 1))
        _set(self, "padding", _padding(padding, f"{where} padding"))
        _set(self, "dilation", _pair(dilation, f"{where} dilation", 1))
        span = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation, strict=True)]
        top, left, bottom, right = self.padding
        if max(top, bottom) >= span[0] or max(left, right) >= span[1]:
            raise ValueError(f"{where}: padding {self.padding} must be smaller than the "
                             f"dilated kernel {tuple(span)} so every window sees real pixels")

    check = _require_shared


@dataclass(frozen=True, init=False)
class Reshape(_KindOfInput, Op):
    """Reshape to `shape` (at most one -1, no 0); shared qparams."""

    inputs: tuple[str, ...]
    output: str
    shape: tuple[int, ...]

    def __init__(self, input: str, output: str, shape):
        _set(self, "output", output)
        _names(self, input)
        shape = tuple(shape)
        if (not shape or not all(_is_int(d) and (d >= 1 or d == -1) for d in shape)
                or shape.count(-1) > 1):
            raise ValueError(f"Reshape {output!r}: shape must be ints >= 1 with at most one -1, "
                             f"got {shape!r}")
        _set(self, "shape", tuple(int(d) for d in shape))

    check = _require_shared


@dataclass(frozen=True, init=False)
class Flatten(_KindOfInput, Op):
    """(N, d1, d2, ...) -> (N, d1·d2·...) (torch.flatten(x, 1), ONNX Flatten axis=1)."""

    inputs: tuple[str, ...]
    output: str

    def __init__(self, input: str, output: str):
        _set(self, "output", output)
        _names(self, input)

    check = _require_shared


@dataclass(frozen=True, init=False)
class Pad(Op):
    """Constant padding of H and W with the zero point (real 0); shared qparams."""

    inputs: tuple[str, ...]
    output: str
    padding: tuple[int, int, int, int]

    def __init__(self, input: str, output: str, padding):
        _set(self, "output", output)
        _names(self, input)
        _set(self, "padding", _padding(padding, f"Pad {output!r} padding"))

    check = _require_shared


@dataclass(frozen=True, init=False)
class FloatOp(Op):
    """A float32 fallback op from FLOAT_OPS; op="callable" runs `fn(*inputs)` (numpy float32
    arrays in, one out) in the reference interpreter only (not exportable or serializable)."""

    inputs: tuple[str, ...]
    output: str
    op: str
    attrs: Mapping[str, float | int | str] = field(default_factory=dict)
    fn: Callable | None = None
    float_inputs = True
    float_output = True

    def __init__(self, inputs, output: str, op: str, attrs=None, fn: Callable | None = None):
        _set(self, "inputs", (inputs,) if isinstance(inputs, str) else inputs)
        _set(self, "output", output)
        _names(self)
        where = f"FloatOp {output!r}"
        if op not in FLOAT_OPS:
            raise ValueError(f"{where}: op must be one of {list(FLOAT_OPS)}, got {op!r}")
        arity = FLOAT_OPS[op]
        if arity is not None and len(self.inputs) != arity:
            raise ValueError(f"{where}: {op} takes {arity} input(s), got {len(self.inputs)}")
        if (op == "callable") != callable(fn):
            raise ValueError(f"{where}: fn must be given exactly when op == 'callable'")
        attrs = dict(attrs or {})
        allowed = {"axis"} if op == "softmax" else set()
        if set(attrs) - allowed or not all(_is_int(v) for v in attrs.values()):
            raise ValueError(f"{where}: attrs for {op} may only hold int {sorted(allowed)}, "
                             f"got {attrs!r}")
        _set(self, "op", op)
        _set(self, "attrs", MappingProxyType({k: int(v) for k, v in attrs.items()}))
        _set(self, "fn", fn)


@dataclass(frozen=True, init=False)
class FloatSubgraph(Op):
    """A float island: `model` is a serialized ONNX ModelProto whose graph takes the float32
    `inputs` in order and returns one float32 tensor of shape `output_shape` (None = dynamic,
    None as a whole = unknown). `source` names the graph node it computes and why it is float."""

    inputs: tuple[str, ...]
    output: str
    model: bytes
    output_shape: tuple[int | None, ...] | None
    source: str
    float_inputs = True
    float_output = True

    def __init__(self, inputs, output: str, model: bytes, output_shape=None, source: str = ""):
        _set(self, "inputs", (inputs,) if isinstance(inputs, str) else inputs)
        _set(self, "output", output)
        _names(self)
        if not isinstance(model, bytes | bytearray) or not model:
            raise ValueError(f"FloatSubgraph {output!r}: model must be non-empty ONNX bytes")
        if output_shape is not None:
            output_shape = tuple(None if d is None else int(d) for d in output_shape)
        _set(self, "model", bytes(model))
        _set(self, "output_shape", output_shape)
        _set(self, "source", str(source))


@dataclass(frozen=True, init=False)
class QLookup(_ArrayEq, Op):
    """y = table[q - dtype min] (see the module docstring); `function` and `params` name what
    it computes (see intq.convert.lookup_onnx), e.g. "leaky_relu" with (0.1,)."""

    inputs: tuple[str, ...]
    output: str
    table: np.ndarray
    function: str
    params: tuple

    def __init__(self, input: str, output: str, table, function: str = "", params=()):
        _set(self, "output", output)
        _names(self, input)
        _set(self, "table", _frozen_array(table, np.int32, f"QLookup {output!r} table"))
        _set(self, "function", str(function))
        params = tuple(params)
        if not all(p is None or isinstance(p, int | float | str) for p in params):
            raise ValueError(f"QLookup {output!r}: params must be numbers, strings or None, "
                             f"got {params!r}")
        _set(self, "params", params)
        if self.table.shape != (256,):
            raise ValueError(f"{self.label}: table must hold 256 entries (8-bit input), "
                             f"got shape {self.table.shape}")

    def check(self, tensors):
        qx, qy = tensors[self.inputs[0]], tensors[self.output]
        if qx.dtype not in ("uint8", "int8"):
            raise ValueError(f"{self.label}: input must be 8-bit, got {qx.dtype}")
        if self.table.min() < qy.qmin or self.table.max() > qy.qmax:
            raise ValueError(f"{self.label}: table entries must lie in the output "
                             f"[{qy.qmin}, {qy.qmax}]")


@dataclass(frozen=True, init=False)
class QMul(Op):
    """Elementwise product with numpy broadcasting (see the module docstring)."""

    inputs: tuple[str, ...]
    output: str

    def __init__(self, a: str, b: str, output: str):
        _set(self, "inputs", (a, b))
        _set(self, "output", output)
        _names(self)

    def check(self, tensors):
        dtypes = {tensors[n].dtype for n in (*self.inputs, self.output)}
        if not dtypes <= {"uint8", "int8"}:
            raise ValueError(f"{self.label}: inputs and output must be 8-bit, got {dtypes}")


@dataclass(frozen=True, init=False)
class Transpose(_KindOfInput, Op):
    """Permute the axes by `perm` (a permutation keeping axis 0, the batch); shared qparams."""

    inputs: tuple[str, ...]
    output: str
    perm: tuple[int, ...]

    def __init__(self, input: str, output: str, perm):
        _set(self, "output", output)
        _names(self, input)
        perm = tuple(perm)
        if (sorted(perm) != list(range(len(perm))) or not perm or perm[0] != 0
                or not all(_is_int(p) for p in perm)):
            raise ValueError(f"Transpose {output!r}: perm must be a permutation of 0..rank-1 "
                             f"that keeps axis 0 first, got {perm!r}")
        _set(self, "perm", tuple(int(p) for p in perm))

    check = _require_shared


@dataclass(frozen=True, init=False)
class Slice(_KindOfInput, Op):
    """x[start:stop:step] along `axis` >= 1 (0 <= start < stop, step >= 1); shared qparams."""

    inputs: tuple[str, ...]
    output: str
    axis: int
    start: int
    stop: int
    step: int

    def __init__(self, input: str, output: str, axis: int, start: int, stop: int,
                 step: int = 1):
        _set(self, "output", output)
        _names(self, input)
        values = (axis, start, stop, step)
        if (not all(_is_int(v) for v in values) or axis < 1 or not 0 <= start < stop
                or step < 1):
            raise ValueError(f"Slice {output!r}: needs axis >= 1, 0 <= start < stop and "
                             f"step >= 1, got axis={axis}, {start}:{stop}:{step}")
        for name, value in zip(("axis", "start", "stop", "step"), values, strict=True):
            _set(self, name, int(value))

    check = _require_shared


@dataclass(frozen=True, init=False)
class ResizeNearest(_KindOfInput, Op):
    """Nearest upsampling of (N, C, H, W) by integer `factors` (fh, fw): y[.., i, j] =
    x[.., i // fh, j // fw]; shared qparams."""

    inputs: tuple[str, ...]
    output: str
    factors: tuple[int, int]

    def __init__(self, input: str, output: str, factors):
        _set(self, "output", output)
        _names(self, input)
        _set(self, "factors", _pair(factors, f"ResizeNearest {output!r} factors", 1))

    check = _require_shared


@dataclass(frozen=True)
class Input:
    """A float32 program input; None in `shape` is a dynamic dimension (e.g. the batch)."""

    name: str
    shape: tuple[int | None, ...]

    def __post_init__(self):
        shape = tuple(self.shape)
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Input: name must be a non-empty string, got {self.name!r}")
        if not all(d is None or (_is_int(d) and d >= 1) for d in shape):
            raise ValueError(f"Input {self.name!r}: shape must hold ints >= 1 or None, "
                             f"got {self.shape!r}")
        _set(self, "shape", tuple(None if d is None else int(d) for d in shape))


@dataclass(frozen=True, eq=False)
class IntProgram(_ArrayEq):
    """A validated, topologically ordered integer program (see the module docstring).

    inputs: float32 inputs; outputs: names of float tensors returned by the program;
    tensors: QTensor of every integer tensor; ops: in execution order; metadata: free text.
    """

    inputs: tuple[Input, ...]
    outputs: tuple[str, ...]
    tensors: Mapping[str, QTensor]
    ops: tuple[Op, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self):
        _set(self, "inputs", tuple(self.inputs))
        _set(self, "outputs", tuple(self.outputs))
        _set(self, "ops", tuple(self.ops))
        _set(self, "tensors", MappingProxyType(dict(self.tensors)))
        _set(self, "metadata", MappingProxyType(dict(self.metadata)))
        _validate(self)

    def producer(self, name: str) -> Op | None:
        """The op that writes `name` (None for a program input)."""
        return next((op for op in self.ops if op.output == name), None)


def _validate(program: IntProgram) -> None:
    if not all(isinstance(i, Input) for i in program.inputs) or not program.inputs:
        raise ValueError("IntProgram: inputs must be a non-empty tuple of Input")
    if not all(isinstance(t, QTensor) for t in program.tensors.values()):
        raise ValueError("IntProgram: tensors must map names to QTensor")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in program.metadata.items()):
        raise ValueError("IntProgram: metadata must map str to str")
    defined = {i.name: True for i in program.inputs}
    if len(defined) != len(program.inputs) or set(defined) & set(program.tensors):
        raise ValueError("IntProgram: input names must be unique float tensors (not in tensors)")
    for op in program.ops:
        if not isinstance(op, Op):
            raise ValueError(f"IntProgram: ops must be Op instances, got {type(op).__name__}")
        _check_op_io(op, program.tensors, defined)
        op.check(program.tensors)
        defined[op.output] = True
    unused = set(program.tensors) - set(defined)
    if unused:
        raise ValueError(f"IntProgram: tensors {sorted(unused)} are never produced by an op")
    for name in program.outputs:
        if name not in defined or name in program.tensors:
            raise ValueError(f"IntProgram: output {name!r} must be a float tensor produced by "
                             f"an op (Dequantize, FloatOp, float-output QLinear)")
    if not program.outputs or len(set(program.outputs)) != len(program.outputs):
        raise ValueError("IntProgram: outputs must be a non-empty tuple of distinct names")


def _check_op_io(op: Op, tensors: Mapping[str, QTensor], defined: dict[str, bool]) -> None:
    for name in op.inputs:
        if name not in defined:
            raise ValueError(f"{op.label}: input {name!r} is not defined by an earlier op or "
                             f"a program input (ops must be in topological order)")
    float_inputs, float_output = op.float_io(tensors)
    for name in op.inputs:
        if (name in tensors) == float_inputs:
            kind = "a float" if float_inputs else "an integer (QTensor)"
            raise ValueError(f"{op.label}: input {name!r} must be {kind} tensor")
    if op.output in defined:
        raise ValueError(f"{op.label}: tensor {op.output!r} is written twice")
    if (op.output in tensors) == float_output:
        kind = "a float tensor (not in tensors)" if float_output else "in tensors"
        raise ValueError(f"{op.label}: output {op.output!r} must be {kind}")
