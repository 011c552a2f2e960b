"""Write an IntProgram as a QDQ ONNX model: float ops between QuantizeLinear/DequantizeLinear.

The form that OpenVINO, TensorRT and ONNX Runtime's QDQ fusion turn into integer kernels. Every
integer tensor t of the program is the output of a QuantizeLinear (uint8; an int8 tensor is
q + 128 with zero point + 128, as in intq.export.onnx) and is read through one
DequantizeLinear `t/dequantized`:

    Quantize        [Relu | Clip] -> QuantizeLinear
    QConv2d         Conv(DQ(x), DQ(w int8, S_w, axis 0), DQ(bias int32, S_x·S_w, axis 0))
                    -> [Relu | Clip] -> QuantizeLinear(S_y, Z_y)
    QLinear         Gemm(transB=1) on the same operands -> [Relu | Clip] -> QuantizeLinear;
                    the float-output QLinear stops at the Gemm (its float32 output)
    QAdd            Add(DQ(a), DQ(b)) -> [Relu | Clip] -> QuantizeLinear
    QAvgPool2d      AveragePool(count_include_pad=1) -> QuantizeLinear
    QGlobalAvgPool  GlobalAveragePool -> QuantizeLinear
    QMaxPool2d, QConcat, Reshape, Flatten, Pad (integer)
                    DQ -> MaxPool / Concat / Reshape / Flatten / Pad(0.0) -> QuantizeLinear
                    with the input's parameters (lossless: no clamp)
    QMul            Mul(DQ(a), DQ(b)) -> [Relu | Clip] -> QuantizeLinear: MLAS QLinearMul's
                    float32 operations, hence the same integers
    QLookup, Transpose, Slice, ResizeNearest (integer), FloatSubgraph, Dequantize, FloatOp,
    float Reshape/Flatten: as in intq.export.onnx (a lookup is already DQ -> f -> Q, or a
                    Gather of uint8; the index ops move uint8 values)

Weights are int8 symmetric or with the program's per-tensor zero point, per channel with
DequantizeLinear axis=0 (Conv weight (O, I/g, kh, kw), Gemm weight (O, K) with transB=1). The
bias is int32 with scale float32(S_x)·float32(S_w[c]), zero point 0: the bias a QLinearConv
or QGemm would add to its accumulator.

Fused activations. A tensor's clamp [qmin, qmax] (module docstring of intq.convert.program)
is left to QuantizeLinear's saturation where it equals the type's range; a fused ReLU with
qmin = zero point = the type's minimum, the usual case, needs no node. Otherwise a Relu (qmin
= zero point > the minimum) or a Clip to [(qmin - Z)·S, (qmax - Z)·S] (float32) precedes the
QuantizeLinear; both give the program's integers, as QuantizeLinear rounds monotonically.

Numerics. The program's requantization is round-half-even of float32(acc)·float32(M), as
ONNX Runtime's QLinear ops compute it. A runtime that fuses the QDQ pattern into those ops
(ONNX Runtime does for Conv, Gemm, Add, pools) computes the same integers as the QOperator
model. A runtime with its own requantization (OpenVINO: u8 x i8 convolution, then float32
dequantization and requantization) may round values near a boundary the other way; its
logits are compared in tests/export/test_onnx_qdq.py and BENCHMARKS.md §10.

Ops this writer does not know (new IntProgram ops) raise a one-line ValueError naming them.
"""

import os

import numpy as np

from intq.convert.program import (
    ACTIVATION_DTYPES,
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
    Quantize,
    Reshape,
    ResizeNearest,
    Slice,
    Transpose,
)
from intq.convert.serialize import atomic_write_bytes
from intq.export.onnx import _Writer

__all__ = ["ONNX_FORMATS", "export_onnx_qdq"]

#: formats of `intq quantize --onnx-format`: "qoperator" (intq.export.onnx) and "qdq" (here)
ONNX_FORMATS = ("qoperator", "qdq")
_SUPPORTED = (Quantize, Dequantize, QConv2d, QLinear, QAdd, QAvgPool2d, QGlobalAvgPool,
              QMaxPool2d, QConcat, Reshape, Flatten, Pad, FloatOp, FloatSubgraph, QLookup, QMul,
              Transpose, Slice, ResizeNearest)


def export_onnx_qdq(program: IntProgram, path: str | os.PathLike | None = None, *,
                    intermediates: bool = False):
    """Return the QDQ onnx.ModelProto of `program`; also write it atomically to `path`."""
    writer = _QdqWriter(program)
    for op in program.ops:
        writer.emit(op)
    model = writer.model(intermediates)
    if path is not None:
        atomic_write_bytes(path, model.SerializeToString())
    return model


class _QdqWriter(_Writer):
    """intq.export.onnx's writer with QDQ node patterns for the integer ops."""

    def __init__(self, program: IntProgram):
        super().__init__(program, "s8")
        self.dequantized: dict[str, str] = {}

    def emit(self, op: Op) -> None:
        if type(op) not in _SUPPORTED:
            raise ValueError(f"{op.label}: the QDQ ONNX writer cannot export "
                             f"{type(op).__name__}; export the QOperator format instead")
        super().emit(op)

    # -- helpers ---------------------------------------------------------------------------
    def float_of(self, name: str) -> str:
        """Float view of tensor `name`: its DequantizeLinear (one per tensor) if integer."""
        if name not in self.tensors:
            return name
        if name not in self.dequantized:
            self.dequantized[name] = f"{name}/dequantized"
            self.node("DequantizeLinear", [name, *self.qparams(name)], self.dequantized[name])
        return self.dequantized[name]

    def quantize(self, x: str, output: str, *, clamp: bool = True) -> None:
        """QuantizeLinear of float `x` to integer tensor `output`, after a Relu or Clip when
        its [qmin, qmax] is narrower than the type's range (and `clamp`)."""
        qt = self.tensors[output]
        lo, hi = ACTIVATION_DTYPES[qt.dtype]
        if clamp and (qt.qmin, qt.qmax) != (lo, hi):
            clamped = f"{output}/clamped"
            if qt.qmin == qt.zero_point and qt.qmax == hi:
                self.node("Relu", [x], clamped)
            else:
                scale = np.float32(qt.scale)
                bounds = [self.const(f"{output}/{end}", np.float32(q - qt.zero_point) * scale)
                          for end, q in (("min", qt.qmin), ("max", qt.qmax))]
                self.node("Clip", [x, *bounds], clamped)
            x = clamped
        self.node("QuantizeLinear", [x, *self.qparams(output)], output)

    def requantized(self, op_type: str, inputs: list[str], output: str, *,
                    clamp: bool = True, **attrs) -> None:
        """`op_type` on the float views of `inputs`, quantized to `output`."""
        raw = f"{output}/float"
        self.node(op_type, [self.float_of(n) for n in inputs], raw, **attrs)
        self.quantize(raw, output, clamp=clamp)

    def dequantized_const(self, name: str, q: np.ndarray, scale: np.ndarray,
                          zero_point: np.ndarray) -> str:
        """DequantizeLinear of constant `q` (per channel along axis 0 when scale has > 1)."""
        attrs = {"axis": 0} if scale.size > 1 else {}
        self.node("DequantizeLinear", [self.const(name, q),
                                       self.const(f"{name}/scale", self.scale_vector(scale)),
                                       self.const(f"{name}/zero_point",
                                                  self.scale_vector(zero_point))],
                  f"{name}/dequantized", **attrs)
        return f"{name}/dequantized"

    def weight_operands(self, op: QConv2d | QLinear) -> list[str]:
        """[DQ(int8 weight), DQ(int32 bias)?] of a conv or linear layer."""
        w, wz = self.weights(op)
        if w.dtype != np.int8:
            raise AssertionError(f"{op.label}: weight_type 's8' gave {w.dtype} weights")
        y = op.output
        operands = [self.dequantized_const(f"{y}/weight", w, op.weight_scale, wz)]
        if op.bias is not None:
            s_x = np.float32(self.tensors[op.inputs[0]].scale)
            bias_scale = (s_x * op.weight_scale).astype(np.float32)
            operands.append(self.dequantized_const(f"{y}/bias", op.bias, bias_scale,
                                                   np.zeros(bias_scale.shape, np.int32)))
        return operands

    # -- ops -------------------------------------------------------------------------------
    def emit_Quantize(self, op: Quantize) -> None:
        self.quantize(op.inputs[0], op.output)

    def emit_QConv2d(self, op: QConv2d) -> None:
        inputs = [self.float_of(op.inputs[0]), *self.weight_operands(op)]
        self.requantized("Conv", inputs, op.output, kernel_shape=list(op.weight.shape[2:]),
                         strides=list(op.stride), pads=list(op.padding),
                         dilations=list(op.dilation), group=op.groups)

    def emit_QLinear(self, op: QLinear) -> None:
        inputs = [self.float_of(op.inputs[0]), *self.weight_operands(op)]
        if op.requant is None:  # the float-output classifier: Gemm's float32 output
            self.node("Gemm", inputs, op.output, transB=1)
            return
        self.requantized("Gemm", inputs, op.output, transB=1)

    def emit_QAdd(self, op: QAdd) -> None:
        self.requantized("Add", list(op.inputs), op.output)

    def emit_QAvgPool2d(self, op: QAvgPool2d) -> None:
        self.requantized("AveragePool", list(op.inputs), op.output,
                         kernel_shape=list(op.kernel), strides=list(op.stride),
                         pads=list(op.padding), count_include_pad=1)

    def emit_QGlobalAvgPool(self, op: QGlobalAvgPool) -> None:
        self.requantized("GlobalAveragePool", list(op.inputs), op.output)

    def emit_QMaxPool2d(self, op: QMaxPool2d) -> None:
        x, pads = op.inputs[0], list(op.padding)
        if max(pads[0], pads[2]) >= op.kernel[0] or max(pads[1], pads[3]) >= op.kernel[1]:
            # ONNX Runtime's MaxPool needs pads < kernel: pad with the smallest float first
            top, left, bottom, right = pads
            padded = f"{op.output}/padded"
            self.node("Pad", [self.float_of(x), self.const(f"{padded}/pads", np.array(
                [0, 0, top, left, 0, 0, bottom, right], np.int64)),
                self.const(f"{padded}/value", np.finfo(np.float32).min)], padded,
                mode="constant")
            x, pads = padded, [0, 0, 0, 0]
        self.requantized("MaxPool", [x], op.output, clamp=False, kernel_shape=list(op.kernel),
                         strides=list(op.stride), pads=pads, dilations=list(op.dilation))

    def emit_QConcat(self, op: QConcat) -> None:
        self.requantized("Concat", list(op.inputs), op.output, clamp=False, axis=op.axis)

    def emit_Reshape(self, op: Reshape) -> None:
        if op.output not in self.tensors:
            super().emit_Reshape(op)
            return
        shape = self.const(f"{op.output}/shape", np.array(op.shape, np.int64))
        self.requantized("Reshape", [op.inputs[0], shape], op.output, clamp=False)

    def emit_Flatten(self, op: Flatten) -> None:
        if op.output not in self.tensors:
            super().emit_Flatten(op)
            return
        self.requantized("Flatten", list(op.inputs), op.output, clamp=False, axis=1)

    def emit_QMul(self, op: QMul) -> None:
        """Mul of the two DequantizeLinears, then QuantizeLinear: the float32 operations of
        MLAS QLinearMul (product of the dequantized values, divided by the output scale,
        rounded half to even), so the integers are the QOperator model's."""
        self.requantized("Mul", list(op.inputs), op.output)

    def emit_Pad(self, op: Pad) -> None:
        top, left, bottom, right = op.padding
        pads = self.const(f"{op.output}/pads", np.array([0, 0, top, left, 0, 0, bottom, right],
                                                        np.int64))
        raw = f"{op.output}/float"
        self.node("Pad", [self.float_of(op.inputs[0]), pads,
                          self.const(f"{op.output}/value", np.float32(0))], raw,
                  mode="constant")
        self.quantize(raw, op.output, clamp=False)

    # -- model -----------------------------------------------------------------------------
    def model(self, intermediates: bool):
        model = super().model(intermediates)
        self.onnx.helper.set_model_props(model, {
            **{p.key: p.value for p in model.metadata_props}, "intq.onnx_format": "qdq"})
        return model

