"""Write an IntProgram as a LiteRT (TFLite) flatbuffer that LiteRT's reference kernels run exactly.

Float32 input and output, int8 inside (the TFLite int8 spec: activations asymmetric per tensor,
weights symmetric per channel, int32 bias). The model takes and returns 4-D tensors in NHWC
(`intq.runtime.litert.LiteRtSession` transposes NCHW arrays at the boundary); other ranks keep
the program's layout. One TFLite op per IntProgram op, except where noted:

    Quantize        QUANTIZE                  Dequantize      DEQUANTIZE
    QConv2d         CONV_2D (quantized_dimension 0), or DEPTHWISE_CONV_2D (dimension 3) when
                    groups == input channels; padding as SAME or VALID, else PAD + VALID
    QLinear         CONV_2D 1x1 between RESHAPEs to (N, 1, 1, K) and back (the reference
                    FULLY_CONNECTED rounds round(double(acc)·S_x·S_w/S_y) once, half away)
    float-output QLinear  BATCH_MATMUL int8 -> int32 (zero points folded into the bias),
                    ADD int32 bias, CAST to float32, MUL by float32(S_x·S_w[c]): the reference's
                    float32(acc)·float32(S_x·S_w[c]), the same float32 operations
    QAdd            ADD                       QConcat         CONCATENATION
    QAvgPool2d      DEPTHWISE_CONV_2D with weights 1 of scale float32(1/(kh·kw)): the program's
                    requantization (AVERAGE_POOL_2D averages raw codes of one scale, rounds
                    half away and skips padding: not the program's arithmetic)
    QGlobalAvgPool  MEAN over H, W (keep_dims); its multiplier is TFLite's (requant.py)
    QMaxPool2d      MAX_POOL_2D (SAME/VALID, else PADV2 with -128 + VALID)
    Pad             PAD (the zero point)      Reshape/Flatten RESHAPE (TRANSPOSE to NCHW first
                                              when the tensor has H·W > 1)
    FloatOp         LOGISTIC, TANH, RELU, HARD_SWISH, SOFTMAX (last axis), ADD, MUL (float32)
    QLookup         CAST int8 -> int32, ADD 128, GATHER from a constant int8 table of 256
                    entries (the program's table + the output's shift): the stored code + 128
                    is the program's q - dtype min for int8 and uint8 inputs alike. TFLite's
                    int8 LOGISTIC/HARD_SWISH/TANH compute their own approximations, not the
                    table
    QMul            MUL (fused RELU/RELU6 or MAXIMUM/MINIMUM as above; broadcasting in NHWC,
                    e.g. a (N, 1, 1, C) gate against (N, H, W, C); inputs of one rank); the
                    multiplier LiteRT derives, float32(float32(S_a·S_b) / S_y), is checked
                    against the reference's (requant.tflite_mul_multiplier)
    Transpose       TRANSPOSE by the program's perm composed with the stored layouts (4-D
                    tensors NHWC, other ranks as in the program). A channel shuffle, Reshape
                    (N, C, H, W) -> (N, a, b, H, W), Transposes of the first three axes,
                    Reshape back, keeps its 5-D tensors as (N, H, W, a, b) (layout
                    "nhwc-split"): RESHAPE, TRANSPOSE (0, 1, 2, 4, 3), RESHAPE, nothing else
    Slice           SLICE (step 1) or STRIDED_SLICE (masks on the other axes), on the stored
                    position of the axis
    ResizeNearest   RESIZE_NEAREST_NEIGHBOR, align_corners and half_pixel_centers off: source
                    index min(floor(float32(d)·float32(in/out)), in - 1), checked to equal
                    d // factor (it does for every size up to 512 and factor up to 16)
    FloatSubgraph   refused (one line naming the op and its source: write ONNX instead)

Clamps. A requantizing op's output clamp [qmin, qmax] becomes its fused activation when TFLite
derives the same range from the output scale (RELU: [Z, 127]; RELU6: [Z, min(127, Z +
round_half_away(float32(6/S)))]); otherwise MAXIMUM/MINIMUM with constants follow the op.

Types. uint8 tensors become int8 (q - 128, zero point - 128: the same integers after the shift).
16-bit activations, weights wider than 8 bits, asymmetric weights, dilated max pools,
callable FloatOps and float islands (FloatSubgraph) are refused with a ValueError naming the op.

Exactness. LiteRT derives each multiplier from the stored float32 scales; the writer checks
that it equals the program's fixed-point (m0, shift) and raises ValueError otherwise. Under
that contract, run_reference(mode="fixed_point") == LiteRT BUILTIN_REF for every integer tensor
(tests/export/test_tflite_agreement.py, test_tflite_modern_ops.py). Kernels whose arithmetic
is not the program's are avoided: the reference FULLY_CONNECTED (round(double(acc)·S_x·S_w/S_y),
one rounding half away) and AVERAGE_POOL_2D, and the int8 LOGISTIC/HARD_SWISH tables.

Metadata "intq" (JSON): program tensor names, their dtype offset and layout ("nhwc",
"nhwc-split" or "plain", see LAYOUTS), for intq.runtime.litert to map LiteRT's tensors back to
the program's.
"""

import json
import os

import numpy as np

from intq.convert.program import (
    Dequantize,
    Flatten,
    FloatOp,
    FloatSubgraph,
    IntProgram,
    Op,
    Pad,
    QAdd,
    QAvgPool2d,
    QConcat,
    QConv2d,
    QGlobalAvgPool,
    QLinear,
    QLookup,
    QMaxPool2d,
    QMul,
    QTensor,
    Quantize,
    Reshape,
    ResizeNearest,
    Slice,
    Transpose,
)
from intq.convert.requant import (
    avgpool_weight_scale,
    tflite_mean_multiplier,
    tflite_mul_multiplier,
)
from intq.convert.serialize import atomic_write_bytes
from intq.convert.shapes import infer_shapes
from intq.qmath.fixedpoint import quantize_multiplier

__all__ = ["METADATA_KEY", "export_tflite"]

METADATA_KEY = "intq"
_FLOAT_OPS = {"sigmoid": "LOGISTIC", "tanh": "TANH", "relu": "RELU", "hardswish": "HARD_SWISH",
              "softmax": "SOFTMAX", "add": "ADD", "mul": "MUL"}
_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)
#: stored axis i holds program axis LAYOUTS[layout][i]; "nhwc-split" is a 5-D (N, a, b, H, W)
#: channel split of an NHWC tensor, stored (N, H, W, a, b)
LAYOUTS = {"nhwc": _TO_NHWC, "nhwc-split": (0, 3, 4, 1, 2)}


def export_tflite(program: IntProgram, path: str | os.PathLike | None = None, *,
                  intermediates: bool = False) -> bytes:
    """Return the .tflite bytes of `program`; also write them atomically to `path` if given.

    `intermediates=True` makes every integer tensor a model output too (so that a delegate
    such as XNNPACK must compute and hand each of them out, for agreement measurements).
    Raises ValueError naming the first op LiteRT cannot take (nothing is written then).
    """
    writer = _Writer(program, intermediates)
    for op in program.ops:
        writer.emit(op)
    data = writer.finish()
    if path is not None:
        atomic_write_bytes(path, data)
    return data


def _offset(qt: QTensor) -> int:
    return -128 if qt.dtype == "uint8" else 0


def _round_half_away(v: float) -> int:
    return int(np.sign(v) * np.floor(abs(v) + 0.5))


def _activation_range(qt: QTensor, act: str) -> tuple[int, int]:
    """[min, max] TFLite's CalculateActivationRangeQuantized gives an int8 output of `qt`."""
    z = qt.zero_point + _offset(qt)
    scale = np.float32(qt.scale)
    if act == "NONE":
        return -128, 127
    if act == "RELU":
        return max(-128, z), 127
    return max(-128, z), min(127, z + _round_half_away(float(np.float32(6.0) / scale)))


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite SAME padding (before, after) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Writer:
    """Collects tensors, buffers and operators of one subgraph."""

    def __init__(self, program: IntProgram, intermediates: bool = False):
        from ai_edge_litert import schema_py_generated as fb

        self.fb = fb
        for op in program.ops:  # before shape inference, which may not know the op either
            if isinstance(op, FloatSubgraph):
                source = " ".join((op.source or "no source given").split())
                raise ValueError(f"{op.label}: float island ({source}) has no LiteRT form; "
                                 f"write ONNX instead (intq.export.export_onnx, -o model.onnx)")
            if not hasattr(self, f"emit_{type(op).__name__}"):
                raise ValueError(f"{op.label}: {type(op).__name__} has no LiteRT form in "
                                 f"intq.export.tflite")
        self.program = program
        self.intermediates = intermediates
        self.qt = program.tensors
        self.shapes = infer_shapes(program)
        self.tensors: list = []
        self.index: dict[str, int] = {}
        self.buffers = [fb.BufferT()]
        self.operators: list = []
        self.opcodes: dict[str, int] = {}
        self.layouts: dict[str, str] = dict.fromkeys(self.channel_splits(), "nhwc-split")
        for name, qt in self.qt.items():
            if qt.dtype not in ("uint8", "int8"):
                op = program.producer(name)
                raise ValueError(f"{op.label}: {qt.dtype} activations; LiteRT int8 kernels "
                                 f"take 8-bit tensors")
        for i in program.inputs:
            self.add_tensor(i.name, self.tflite_shape(i.name), fb.TensorType.FLOAT32)

    # -- tensors ---------------------------------------------------------------------------
    def tflite_shape(self, name: str) -> tuple[int | None, ...]:
        shape = self.shapes[name]
        if shape is None:
            raise ValueError(f"tensor {name!r}: its shape is unknown; LiteRT needs static shapes")
        layout = self.layouts.get(name, "nhwc" if len(shape) == 4 else "plain")
        self.layouts[name] = layout
        return tuple(shape[i] for i in LAYOUTS[layout]) if layout in LAYOUTS else tuple(shape)

    def channel_splits(self) -> set[str]:
        """5-D integer tensors (N, a, b, H, W) of channel shuffles, stored (N, H, W, a, b): a
        Reshape of an (N, a·b, H, W) tensor, Transposes among the first three axes, a Reshape
        back to (N, a'·b', H, W). Each is RESHAPE, TRANSPOSE (0, 1, 2, 4, 3), RESHAPE in NHWC,
        with no TRANSPOSE to NCHW and back. Only tensors whose every reader is such a Transpose
        or Reshape qualify."""
        readers: dict[str, list[Op]] = {}
        for op in self.program.ops:
            for name in op.inputs:
                readers.setdefault(name, []).append(op)

        def split_of(name: str, hw) -> bool:
            shape = self.shapes[name]
            return (name in self.qt and shape is not None and len(shape) == 5
                    and tuple(shape[3:]) == tuple(hw))

        def closes(name: str) -> bool:  # every reader keeps the split or ends it
            hw = self.shapes[name][3:]
            for op in readers.get(name, []):
                out = self.shapes[op.output]
                if isinstance(op, Transpose) and op.perm[3:] == (3, 4):
                    if not closes(op.output):
                        return False
                elif not (isinstance(op, Reshape) and out is not None and len(out) == 4
                          and tuple(out[2:]) == tuple(hw)):
                    return False
            return name not in self.program.outputs

        found: set[str] = set()
        for op in self.program.ops:
            shape = self.shapes[op.inputs[0]] if op.inputs else None
            if (isinstance(op, Reshape) and shape is not None and len(shape) == 4
                    and split_of(op.output, shape[2:]) and closes(op.output)):
                found.add(op.output)
            elif isinstance(op, Transpose) and op.inputs[0] in found:
                found.add(op.output)
        return found

    def add_tensor(self, name: str, shape, ttype: int, *, data: np.ndarray | None = None,
                   scale=None, zero_point=None, dim: int = 0) -> int:
        fb = self.fb
        t = fb.TensorT()
        t.name = name
        t.shape = [1 if d is None else int(d) for d in shape]
        if any(d is None for d in shape):
            t.shapeSignature = [-1 if d is None else int(d) for d in shape]
        t.type = ttype
        t.buffer = 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        if scale is not None:
            q = fb.QuantizationParametersT()
            q.scale = [float(s) for s in np.atleast_1d(scale)]
            q.zeroPoint = [int(z) for z in np.atleast_1d(zero_point)]
            q.quantizedDimension = dim
            t.quantization = q
        self.tensors.append(t)
        self.index[name] = len(self.tensors) - 1
        return self.index[name]

    def int8_tensor(self, name: str, shape=None) -> int:
        """An activation tensor of the program (int8, its QTensor's qparams)."""
        qt = self.qt[name]
        shape = self.tflite_shape(name) if shape is None else shape
        return self.add_tensor(name, shape, self.fb.TensorType.INT8, scale=qt.scale,
                               zero_point=qt.zero_point + _offset(qt))

    def like(self, name: str, new: str, shape) -> int:
        """A temporary int8 tensor with the qparams of program tensor `name`."""
        qt = self.qt[name]
        return self.add_tensor(new, shape, self.fb.TensorType.INT8, scale=qt.scale,
                               zero_point=qt.zero_point + _offset(qt))

    def const(self, name: str, value: np.ndarray, ttype: int, **quant) -> int:
        value = np.asarray(value)
        return self.add_tensor(name, value.shape, ttype, data=value, **quant)

    def int32_const(self, name: str, value) -> int:
        return self.const(name, np.asarray(value, np.int32), self.fb.TensorType.INT32)

    # -- operators -------------------------------------------------------------------------
    def operator(self, code: str, inputs: list[int], outputs: list[int], options=None,
                 options_type: str | None = None) -> None:
        fb = self.fb
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        op = fb.OperatorT()
        op.opcodeIndex = self.opcodes[code]
        op.inputs, op.outputs = list(inputs), list(outputs)
        if options is not None:
            op.builtinOptionsType = getattr(fb.BuiltinOptions, options_type)
            op.builtinOptions = options
        self.operators.append(op)

    def options(self, kind: str, **fields):
        obj = getattr(self.fb, f"{kind}T")()
        for key, value in fields.items():
            setattr(obj, key, value)
        return obj

    def emit(self, op: Op) -> None:
        getattr(self, f"emit_{type(op).__name__}")(op)

    def activation(self, name: str, fused: bool = True) -> tuple[int, str]:
        """(fused activation code, tensor name the op writes) for requantizing op output
        `name`; a clamp no fused activation gives is applied by MAXIMUM/MINIMUM after it."""
        qt = self.qt[name]
        clamp = (qt.qmin + _offset(qt), qt.qmax + _offset(qt))
        for act in ("NONE", "RELU", "RELU6") if fused else ("NONE",):
            if _activation_range(qt, act) == clamp:
                return getattr(self.fb.ActivationFunctionType, act), name
        return self.fb.ActivationFunctionType.NONE, f"{name}/unclamped"

    def finish_clamp(self, name: str, written: str) -> None:
        """MAXIMUM/MINIMUM from `written` to program tensor `name` when they differ."""
        if written == name:
            return
        qt = self.qt[name]
        lo, hi = qt.qmin + _offset(qt), qt.qmax + _offset(qt)
        shape = self.tflite_shape(name)
        src = self.index[written]
        steps = [(code, v) for code, v, on in (("MAXIMUM", lo, lo > -128),
                                               ("MINIMUM", hi, hi < 127)) if on]
        for i, (code, value) in enumerate(steps):
            last = i == len(steps) - 1
            dst = self.int8_tensor(name) if last else self.like(name, f"{name}/{code}", shape)
            c = self.const(f"{name}/{code}/value", np.array([value], np.int8),
                           self.fb.TensorType.INT8, scale=qt.scale,
                           zero_point=qt.zero_point + _offset(qt))
            self.operator(code, [src, c], [dst])
            src = dst

    def output_for(self, name: str, fused: bool = True) -> tuple[int, int]:
        """(activation code, tensor index) of the tensor a requantizing op writes."""
        act, written = self.activation(name, fused)
        if written == name:
            return act, self.int8_tensor(name)
        return act, self.like(name, written, self.tflite_shape(name))

    def check_multiplier(self, op: Op, m0, shift) -> None:
        """ValueError unless LiteRT's (m0, shift) equal the program's (broadcast per channel)."""
        want = np.stack(np.broadcast_arrays(np.atleast_1d(np.asarray(m0, np.int64)),
                                            np.atleast_1d(shift)))
        stored = np.stack([op.requant.m0, op.requant.shift]).astype(np.int64)
        if not np.array_equal(np.broadcast_to(stored, want.shape), want):
            raise ValueError(f"{op.label}: requant (m0, shift) differs from what LiteRT derives "
                             f"from the scales; build it with intq.convert.requant")

    # -- spatial helpers -------------------------------------------------------------------
    def padding(self, op: Op, x: str, kernel, stride, dilation, pads) -> tuple[int, int]:
        """(SAME or VALID code, input tensor index), adding a PAD/PADV2 where needed."""
        _, _, h, w = self.shapes[x]
        same = (*_same_padding(h, kernel[0], stride[0], dilation[0]),
                *_same_padding(w, kernel[1], stride[1], dilation[1]))
        top, left, bottom, right = pads
        valid = self.fb.Padding.VALID
        if (top, left, bottom, right) == (0, 0, 0, 0):
            return valid, self.index[x]
        if (top, bottom, left, right) == same:
            return self.fb.Padding.SAME, self.index[x]
        shape = self.tflite_shape(x)
        padded_shape = (shape[0], shape[1] + top + bottom, shape[2] + left + right, shape[3])
        padded = self.like(x, f"{op.output}/padded", padded_shape)
        paddings = self.int32_const(f"{op.output}/paddings",
                                    [[0, 0], [top, bottom], [left, right], [0, 0]])
        if isinstance(op, QMaxPool2d):  # -128 is never a window's maximum (QMaxPool2d checks)
            qt = self.qt[x]
            low = self.const(f"{op.output}/pad_value", np.array([-128], np.int8),
                             self.fb.TensorType.INT8, scale=qt.scale,
                             zero_point=qt.zero_point + _offset(qt))
            self.operator("PADV2", [self.index[x], paddings, low], [padded])
        else:
            self.operator("PAD", [self.index[x], paddings], [padded])
        return valid, padded

    # -- ops -------------------------------------------------------------------------------
    def emit_Quantize(self, op: Quantize) -> None:
        _, out = self.output_for(op.output, fused=False)
        self.operator("QUANTIZE", [self.index[op.inputs[0]]], [out])
        self.finish_clamp(op.output, self.tensors[out].name)

    def emit_Dequantize(self, op: Dequantize) -> None:
        out = self.add_tensor(op.output, self.tflite_shape(op.output),
                              self.fb.TensorType.FLOAT32)
        self.operator("DEQUANTIZE", [self.index[op.inputs[0]]], [out])

    def weights(self, op: QConv2d | QLinear) -> np.ndarray:
        if op.weight_bits > 8 or op.weight_zero_point != 0:
            raise ValueError(f"{op.label}: LiteRT int8 kernels take symmetric weights of at most "
                             f"8 bits, got {op.weight_bits} bits with zero point "
                             f"{op.weight_zero_point}")
        return op.weight.astype(np.int8)

    def conv_requant(self, op, s_w: np.ndarray) -> None:
        """TFLite's per-channel multipliers: float64 S_in·S_w[c] / S_out."""
        s_in, s_out = self.qt[op.inputs[0]].scale, self.qt[op.output].scale
        real = np.float64(np.float32(s_in)) * s_w.astype(np.float64) / np.float64(
            np.float32(s_out))
        self.check_multiplier(op, *quantize_multiplier(real))

    def bias(self, op, channels: int, s_w: np.ndarray) -> int:
        bias = getattr(op, "bias", None)
        bias = np.zeros(channels, np.int32) if bias is None else bias.astype(np.int32)
        s_in = np.float32(self.qt[op.inputs[0]].scale)
        return self.const(f"{op.output}/bias", bias, self.fb.TensorType.INT32,
                          scale=(s_in * s_w).astype(np.float32),
                          zero_point=np.zeros(channels, np.int64))

    def emit_QConv2d(self, op: QConv2d) -> None:
        w = self.weights(op)
        out_c, in_per_group, kh, kw = w.shape
        in_c = in_per_group * op.groups
        s_w = np.broadcast_to(op.weight_scale, (out_c,)).astype(np.float32)
        self.conv_requant(op, s_w)
        depthwise = op.groups == in_c and op.groups > 1
        if depthwise:
            filt, dim = w.transpose(1, 2, 3, 0), 3  # (1, kh, kw, C·M)
        else:
            filt, dim = w.transpose(0, 2, 3, 1), 0  # (O, kh, kw, I/groups)
        fi = self.const(f"{op.output}/weight", filt, self.fb.TensorType.INT8, scale=s_w,
                        zero_point=np.zeros(out_c, np.int64), dim=dim)
        self.spatial_op(op, fi, self.bias(op, out_c, s_w), (kh, kw), depthwise,
                        out_c // in_c if depthwise else 1)

    def spatial_op(self, op, filt: int, bias: int, kernel, depthwise: bool,
                   multiplier: int) -> None:
        x = op.inputs[0]
        dilation = getattr(op, "dilation", (1, 1))
        pad, xi = self.padding(op, x, kernel, op.stride, dilation, op.padding)
        act, out = self.output_for(op.output)
        common = dict(padding=pad, strideH=op.stride[0], strideW=op.stride[1],
                      dilationHFactor=dilation[0], dilationWFactor=dilation[1],
                      fusedActivationFunction=act)
        if depthwise:
            options = self.options("DepthwiseConv2DOptions", depthMultiplier=multiplier,
                                   **common)
            self.operator("DEPTHWISE_CONV_2D", [xi, filt, bias], [out], options,
                          "DepthwiseConv2DOptions")
        else:
            options = self.options("Conv2DOptions", **common)
            self.operator("CONV_2D", [xi, filt, bias], [out], options, "Conv2DOptions")
        self.finish_clamp(op.output, self.tensors[out].name)

    def emit_QAvgPool2d(self, op: QAvgPool2d) -> None:
        x = op.inputs[0]
        channels = self.shapes[x][1]
        s_w = np.full(channels, avgpool_weight_scale(op.kernel[0] * op.kernel[1]), np.float32)
        self.conv_requant(op, s_w)
        filt = self.const(f"{op.output}/weight", np.ones((1, *op.kernel, channels), np.int8),
                          self.fb.TensorType.INT8, scale=s_w,
                          zero_point=np.zeros(channels, np.int64), dim=3)
        self.spatial_op(op, filt, self.bias(op, channels, s_w), op.kernel, True, 1)

    def emit_QLinear(self, op: QLinear) -> None:
        """RESHAPE (N, K) -> (N, 1, 1, K), CONV_2D 1x1, RESHAPE back: CONV_2D requantizes
        with MultiplyByQuantizedMultiplier, while the reference FULLY_CONNECTED computes
        round(double(acc)·S_x·S_w[c]/S_y), one rounding half away, not the program's."""
        if op.requant is None:
            self.float_linear(op)
            return
        x, y = op.inputs[0], op.output
        w = self.weights(op)
        out_c, in_c = w.shape
        s_w = np.broadcast_to(op.weight_scale, (out_c,)).astype(np.float32)
        self.conv_requant(op, s_w)
        batch = self.shapes[x][0]
        x4 = self.like(x, f"{y}/input_nhwc", (batch, 1, 1, in_c))
        self.operator("RESHAPE", [self.index[x], self.int32_const(f"{y}/input_shape",
                                                                  [-1, 1, 1, in_c])], [x4],
                      self.options("ReshapeOptions", newShape=[-1, 1, 1, in_c]),
                      "ReshapeOptions")
        fi = self.const(f"{y}/weight", w.reshape(out_c, 1, 1, in_c), self.fb.TensorType.INT8,
                        scale=s_w, zero_point=np.zeros(out_c, np.int64))
        act, written = self.activation(y)
        y4 = self.like(y, f"{y}/nhwc", (batch, 1, 1, out_c))
        options = self.options("Conv2DOptions", padding=self.fb.Padding.VALID, strideH=1,
                               strideW=1, dilationHFactor=1, dilationWFactor=1,
                               fusedActivationFunction=act)
        self.operator("CONV_2D", [x4, fi, self.bias(op, out_c, s_w)], [y4], options,
                      "Conv2DOptions")
        out = (self.int8_tensor(y) if written == y
               else self.like(y, written, self.tflite_shape(y)))
        self.operator("RESHAPE", [y4, self.int32_const(f"{y}/shape", [-1, out_c])], [out],
                      self.options("ReshapeOptions", newShape=[-1, out_c]), "ReshapeOptions")
        self.finish_clamp(y, written)

    def float_linear(self, op: QLinear) -> None:
        """float32(acc)·float32(S_x·S_w[c]): BATCH_MATMUL -> int32, + bias, CAST, MUL."""
        fb, x, y = self.fb, op.inputs[0], op.output
        w = self.weights(op)
        out_c = w.shape[0]
        qx = self.qt[x]
        z = qx.zero_point + _offset(qx)  # Σ x·w - z·Σ w = Σ (x - z)·w: exact in int32
        bias = (np.zeros(out_c, np.int64) if op.bias is None else op.bias.astype(np.int64))
        bias = bias - z * w.astype(np.int64).sum(axis=1)
        if np.abs(bias).max(initial=0) >= 2**31:
            raise ValueError(f"{op.label}: the bias with the zero point folded in overflows int32")
        shape = self.tflite_shape(y)
        wi = self.const(f"{y}/weight", w, fb.TensorType.INT8, scale=np.float32(1), zero_point=0)
        acc = self.add_tensor(f"{y}/acc", shape, fb.TensorType.INT32)
        self.operator("BATCH_MATMUL", [self.index[x], wi], [acc],
                      self.options("BatchMatMulOptions", adjX=False, adjY=True),
                      "BatchMatMulOptions")
        biased = self.add_tensor(f"{y}/acc_bias", shape, fb.TensorType.INT32)
        self.operator("ADD", [acc, self.int32_const(f"{y}/bias", bias)], [biased],
                      self.options("AddOptions"), "AddOptions")
        accf = self.add_tensor(f"{y}/acc_float", shape, fb.TensorType.FLOAT32)
        self.operator("CAST", [biased], [accf])
        scale = (np.float32(qx.scale) * op.weight_scale).astype(np.float32)
        scale = np.broadcast_to(scale, (out_c,)).astype(np.float32)
        out = self.add_tensor(y, shape, fb.TensorType.FLOAT32)
        self.operator("MUL", [accf, self.const(f"{y}/scale", scale, fb.TensorType.FLOAT32)],
                      [out], self.options("MulOptions"), "MulOptions")

    def emit_QAdd(self, op: QAdd) -> None:
        a, b = op.inputs
        if self.shapes[a] != self.shapes[b]:
            raise ValueError(f"{op.label}: ADD inputs of different shapes")
        r = op.requant
        sa, sb, sy = (float(np.float32(self.qt[n].scale)) for n in (a, b, op.output))
        twice_max = 2.0 * max(sa, sb)
        m0, shift = quantize_multiplier(np.array([sa / twice_max, sb / twice_max,
                                                  twice_max / (2.0**20 * sy)]))
        if r.left_shift != 20 or [int(v) for v in m0] != [r.m0_a, r.m0_b, r.m0_out] or [
                int(v) for v in shift] != [r.shift_a, r.shift_b, r.shift_out]:
            raise ValueError(f"{op.label}: add multipliers differ from LiteRT's ADD (left "
                             f"shift 20); build them with intq.convert.requant.add_requant")
        act, out = self.output_for(op.output)
        self.operator("ADD", [self.index[a], self.index[b]], [out],
                      self.options("AddOptions", fusedActivationFunction=act), "AddOptions")
        self.finish_clamp(op.output, self.tensors[out].name)

    def emit_QGlobalAvgPool(self, op: QGlobalAvgPool) -> None:
        x = op.inputs[0]
        self.check_multiplier(op, *tflite_mean_multiplier(self.qt[x].scale,
                                                          self.qt[op.output].scale, op.count))
        _, out = self.output_for(op.output, fused=False)
        self.operator("MEAN", [self.index[x], self.int32_const(f"{op.output}/axes", [1, 2])],
                      [out], self.options("ReducerOptions", keepDims=True), "ReducerOptions")
        self.finish_clamp(op.output, self.tensors[out].name)

    def emit_QMaxPool2d(self, op: QMaxPool2d) -> None:
        if op.dilation != (1, 1):
            raise ValueError(f"{op.label}: LiteRT's MAX_POOL_2D has no dilation, got "
                             f"{op.dilation}")
        pad, xi = self.padding(op, op.inputs[0], op.kernel, op.stride, (1, 1), op.padding)
        options = self.options("Pool2DOptions", padding=pad, strideH=op.stride[0],
                               strideW=op.stride[1], filterHeight=op.kernel[0],
                               filterWidth=op.kernel[1])
        self.operator("MAX_POOL_2D", [xi], [self.int8_tensor(op.output)], options,
                      "Pool2DOptions")

    def emit_QConcat(self, op: QConcat) -> None:
        rank = len(self.shapes[op.output])
        axis = op.axis % rank
        if rank == 4:
            axis = _TO_NHWC.index(axis)
        out = self.int8_tensor(op.output)
        self.operator("CONCATENATION", [self.index[n] for n in op.inputs], [out],
                      self.options("ConcatenationOptions", axis=axis),
                      "ConcatenationOptions")

    def emit_Pad(self, op: Pad) -> None:
        top, left, bottom, right = op.padding
        paddings = self.int32_const(f"{op.output}/paddings",
                                    [[0, 0], [top, bottom], [left, right], [0, 0]])
        self.operator("PAD", [self.index[op.inputs[0]], paddings],
                      [self.int8_tensor(op.output)])

    def emit_Reshape(self, op: Reshape) -> None:
        self.reshape(op, op.shape)

    def emit_Flatten(self, op: Flatten) -> None:
        shape = self.shapes[op.inputs[0]]
        self.reshape(op, (-1, int(np.prod(shape[1:]))))

    def reshape(self, op: Op, target) -> None:
        """RESHAPE in NCHW order: TRANSPOSE an NHWC input with H·W > 1 to NCHW first, and an
        NHWC output with H·W > 1 back from NCHW."""
        x, y = op.inputs[0], op.output
        src, out_shape = self.index[x], self.shapes[y]
        if self.layouts.get(y) == "nhwc-split" or self.layouts[x] == "nhwc-split":
            target = [target[i] for i in LAYOUTS[self.layouts.get(y) or "nhwc"]]
            self.operator("RESHAPE", [src, self.int32_const(f"{y}/shape", target)],
                          [self.make_output(y)],
                          self.options("ReshapeOptions", newShape=target), "ReshapeOptions")
            return
        if self.layouts[x] == "nhwc" and np.prod(self.shapes[x][2:]) > 1:
            src = self.transpose(op, x, src, _TO_NCHW, "nchw")
        nhwc_out = len(out_shape) == 4
        transpose_out = nhwc_out and np.prod(out_shape[2:]) > 1
        target = list(target)
        if nhwc_out and not transpose_out:
            target = [target[i] for i in _TO_NHWC]
        shape = tuple(out_shape) if transpose_out else self.tflite_shape(y)
        dst = (self.new_like(y, f"{y}/nchw", shape) if transpose_out else self.make_output(y))
        self.operator("RESHAPE", [src, self.int32_const(f"{y}/shape", target)], [dst],
                      self.options("ReshapeOptions", newShape=target), "ReshapeOptions")
        if transpose_out:
            self.operator("TRANSPOSE", [dst, self.int32_const(f"{y}/perm", _TO_NHWC)],
                          [self.make_output(y)])

    def transpose(self, op: Op, x: str, src: int, perm, suffix: str) -> int:
        shape = [self.tensors[src].shape[i] for i in perm]
        signature = self.tensors[src].shapeSignature
        dims = [None if signature is not None and signature[i] == -1 else d
                for i, d in zip(perm, shape, strict=True)]
        dst = self.new_like(x, f"{op.output}/{suffix}", dims)
        self.operator("TRANSPOSE", [src, self.int32_const(f"{op.output}/{suffix}/perm", perm)],
                      [dst])
        return dst

    def new_like(self, name: str, new: str, shape) -> int:
        if name in self.qt:
            return self.like(name, new, shape)
        return self.add_tensor(new, shape, self.fb.TensorType.FLOAT32)

    def make_output(self, name: str) -> int:
        if name in self.qt:
            return self.int8_tensor(name)
        return self.add_tensor(name, self.tflite_shape(name), self.fb.TensorType.FLOAT32)

    def emit_QLookup(self, op: QLookup) -> None:
        """CAST int8 -> int32, ADD 128, GATHER from the 256-entry int8 table: the writer's
        int8 code q is the program's code shifted to [-128, 127], so q + 128 is the program's
        q - dtype min, the table index, for int8 and uint8 inputs alike."""
        fb, x, y = self.fb, op.inputs[0], op.output
        qy = self.qt[y]
        shape = self.tflite_shape(y)
        wide = self.add_tensor(f"{y}/code_int32", shape, fb.TensorType.INT32)
        self.operator("CAST", [self.index[x]], [wide])
        index = self.add_tensor(f"{y}/table_index", shape, fb.TensorType.INT32)
        self.operator("ADD", [wide, self.int32_const(f"{y}/index_offset", [128])], [index],
                      self.options("AddOptions"), "AddOptions")
        table = self.const(f"{y}/table", (op.table.astype(np.int64) + _offset(qy)).astype(
            np.int8), fb.TensorType.INT8, scale=qy.scale, zero_point=qy.zero_point + _offset(qy))
        self.operator("GATHER", [table, index], [self.int8_tensor(y)],
                      self.options("GatherOptions", axis=0, batchDims=0), "GatherOptions")

    def emit_QMul(self, op: QMul) -> None:
        a, b = op.inputs
        if len(self.shapes[a]) != len(self.shapes[b]):
            raise ValueError(f"{op.label}: MUL inputs of different ranks "
                             f"{self.shapes[a]} and {self.shapes[b]}")
        sa, sb, sy = (np.float32(self.qt[n].scale) for n in (a, b, op.output))
        # TFLite MUL: double(float(S_a·S_b) / S_y), float32 arithmetic (mul.cc Prepare)
        theirs = quantize_multiplier(np.array([np.float64((sa * sb) / sy)]))
        ours = tflite_mul_multiplier(sa, sb, sy)
        if [int(theirs[0][0]), int(theirs[1][0])] != list(ours):
            raise ValueError(f"{op.label}: the reference's MUL multiplier {ours} differs from "
                             f"LiteRT's {int(theirs[0][0]), int(theirs[1][0])}")
        act, out = self.output_for(op.output)
        self.operator("MUL", [self.index[a], self.index[b]], [out],
                      self.options("MulOptions", fusedActivationFunction=act), "MulOptions")
        self.finish_clamp(op.output, self.tensors[out].name)

    def axes(self, name: str) -> tuple[int, ...]:
        """Program axis of each axis of `name` as stored (NHWC for 4-D tensors)."""
        return LAYOUTS.get(self.layouts[name], tuple(range(len(self.shapes[name]))))

    def emit_Transpose(self, op: Transpose) -> None:
        """TRANSPOSE by the program's perm composed with the layouts on both sides."""
        x, y = op.inputs[0], op.output
        self.tflite_shape(y)  # sets y's layout
        src, dst = self.axes(x), self.axes(y)
        perm = [src.index(op.perm[d]) for d in dst]
        self.operator("TRANSPOSE", [self.index[x], self.int32_const(f"{y}/perm", perm)],
                      [self.make_output(y)])

    def emit_Slice(self, op: Slice) -> None:
        """SLICE (step 1) or STRIDED_SLICE along the stored position of the program's axis."""
        x, y = op.inputs[0], op.output
        rank = len(self.shapes[x])
        axis = self.axes(x).index(op.axis)
        begin = [0] * rank
        begin[axis] = op.start
        if op.step == 1:
            size = [-1] * rank
            size[axis] = op.stop - op.start
            self.operator("SLICE", [self.index[x], self.int32_const(f"{y}/begin", begin),
                                    self.int32_const(f"{y}/size", size)], [self.make_output(y)])
            return
        end, strides = [0] * rank, [1] * rank
        end[axis], strides[axis] = op.stop, op.step
        mask = sum(1 << i for i in range(rank) if i != axis)
        self.operator("STRIDED_SLICE", [self.index[x], self.int32_const(f"{y}/begin", begin),
                                        self.int32_const(f"{y}/end", end),
                                        self.int32_const(f"{y}/strides", strides)],
                      [self.make_output(y)],
                      self.options("StridedSliceOptions", beginMask=mask, endMask=mask),
                      "StridedSliceOptions")

    def emit_ResizeNearest(self, op: ResizeNearest) -> None:
        """RESIZE_NEAREST_NEIGHBOR (align_corners and half_pixel_centers off): source index
        min(floor(float32(d)·float32(in/out)), in - 1), checked to be d // factor."""
        x, y = op.inputs[0], op.output
        _, _, h, w = self.shapes[x]
        for size, factor in ((h, op.factors[0]), (w, op.factors[1])):
            out = np.arange(size * factor)
            scale = np.float32(size) / np.float32(size * factor)
            index = np.minimum(np.floor(out.astype(np.float32) * scale), size - 1)
            if not np.array_equal(index.astype(np.int64), out // factor):
                raise ValueError(f"{op.label}: RESIZE_NEAREST_NEIGHBOR's float32 source index "
                                 f"is not d // {factor} for size {size}")
        size = self.int32_const(f"{y}/size", [h * op.factors[0], w * op.factors[1]])
        self.operator("RESIZE_NEAREST_NEIGHBOR", [self.index[x], size], [self.make_output(y)],
                      self.options("ResizeNearestNeighborOptions", alignCorners=False,
                                   halfPixelCenters=False), "ResizeNearestNeighborOptions")

    def emit_FloatOp(self, op: FloatOp) -> None:
        code = _FLOAT_OPS.get(op.op)
        shapes = [self.shapes[n] for n in op.inputs]
        if code == "SOFTMAX" and not (len(shapes[0]) == 2 and op.attrs.get("axis", -1) in
                                      (-1, 1)):
            code = None
        if code in ("ADD", "MUL") and shapes[0] != shapes[1]:
            code = None
        if code is None:
            raise ValueError(f"{op.label}: float op {op.op!r} {dict(op.attrs)} has no LiteRT "
                             f"form in intq.export.tflite")
        options = {"SOFTMAX": ("SoftmaxOptions", {"beta": 1.0}), "ADD": ("AddOptions", {}),
                   "MUL": ("MulOptions", {})}.get(code)
        out = self.add_tensor(op.output, self.tflite_shape(op.output),
                              self.fb.TensorType.FLOAT32)
        args = () if options is None else (self.options(options[0], **options[1]), options[0])
        self.operator(code, [self.index[n] for n in op.inputs], [out], *args)

    # -- model -----------------------------------------------------------------------------
    def metadata(self) -> bytes:
        ints = {n: {"dtype": qt.dtype, "offset": _offset(qt), "layout": self.layouts[n]}
                for n, qt in self.qt.items()}
        floats = {n: self.layouts[n] for n in [*(i.name for i in self.program.inputs),
                                               *self.program.outputs]}
        return json.dumps({"inputs": [i.name for i in self.program.inputs],
                           "outputs": list(self.program.outputs), "integer_tensors": ints,
                           "float_layouts": floats}).encode()

    def finish(self) -> bytes:
        import flatbuffers

        fb = self.fb
        graph = fb.SubGraphT()
        graph.tensors, graph.operators = self.tensors, self.operators
        graph.inputs = [self.index[i.name] for i in self.program.inputs]
        graph.outputs = [self.index[n] for n in self.program.outputs]
        if self.intermediates:
            graph.outputs += [self.index[n] for n in self.qt]
        graph.name = self.program.metadata.get("name", "intq_program")
        codes = []
        for name in self.opcodes:
            code = fb.OperatorCodeT()
            code.builtinCode = getattr(fb.BuiltinOperator, name)
            code.deprecatedBuiltinCode = min(code.builtinCode, 127)
            code.version = 1
            codes.append(code)
        meta_buffer = fb.BufferT()
        meta_buffer.data = np.frombuffer(self.metadata(), np.uint8)
        self.buffers.append(meta_buffer)
        meta = fb.MetadataT()
        meta.name, meta.buffer = METADATA_KEY, len(self.buffers) - 1
        model = fb.ModelT()
        model.version, model.operatorCodes, model.subgraphs = 3, codes, [graph]
        model.buffers, model.metadata, model.description = self.buffers, [meta], "intq"
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())
