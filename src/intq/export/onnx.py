"""Write an IntProgram as an ONNX model (QOperator format) that ONNX Runtime runs exactly.

Float input, float output, integer computation inside, one ONNX node per op (plus a Clip
where a fused ReLU/ReLU6 narrows the output range, and a channel Pad before a stem conv, below):

    Quantize       QuantizeLinear             Dequantize     DequantizeLinear
    QConv2d        QLinearConv (+ int32 bias) QLinear        com.microsoft QGemm (transB=1)
    float-output QLinear  com.microsoft QGemm without y_scale / y_zero_point: float output
    QAdd           com.microsoft QLinearAdd   QConcat        Concat
    QAvgPool2d     QLinearConv, depthwise, weights 1 of scale float32(1/(kh·kw))
    QGlobalAvgPool com.microsoft QLinearGlobalAveragePool
    QMaxPool2d     MaxPool                    Reshape/Flatten/Pad  Reshape/Flatten/Pad(zp)
    FloatOp        Sigmoid, Tanh, Relu, HardSigmoid(1/6, 1/2), HardSwish, Softmax, Add, Mul
                   (a "callable" FloatOp cannot be exported)
    FloatSubgraph  its ONNX graph spliced in (names prefixed "<output>/", opset converted)
    QLookup        DequantizeLinear -> f -> QuantizeLinear when the table is what ONNX Runtime
                   computes that way (intq.convert.lookup_onnx; 40x faster than a Gather),
                   else Gather(uint8 table of 256, Cast(x, int32)): exact for any table
    QMul           com.microsoft QLinearMul (+ Clip)
    Transpose / Slice / ResizeNearest  Transpose / Slice / Resize (nearest, asymmetric, floor)

Types. Weights that fit 4 bits (int8 in [-8, 7]) are stored as packed INT4 initializers and
cast to int8 in the graph (ONNX Runtime folds the Cast into an int8 initializer at session load:
the file halves, the kernels and integers stay those of int8 weights). Activations are uint8
(an int8 tensor is written as q + 128 with zero point + 128,
which changes no result); 16-bit activations and weights above 8 bits are refused. Weights
(`weight_type`):
    "auto" (default): int8 when every weight and the weight zero point lie in [-64, 63],
        else uint8 = w + 128. Exact on every x86-64 CPU: MLAS u8·s8 kernels without VNNI
        add pairs of products in int16 (vpmaddubsw), which saturates beyond 7-bit weights.
    "s8": always int8. Fastest, and exact on CPUs with AVX512-VNNI/AVX-VNNI/AMX only.
    "u8": always uint8 (exact everywhere, slower).
The model's metadata "intq.exact_on" says which CPUs give exact results; OrtSession warns on
a CPU outside it. benchmarks/onnx_kernels.py measures the cost of each choice.

Speed. ONNX Runtime runs QLinearConv on MLAS's fused symmetric kernel (ConvSym: int8 weights
with zero point 0, requantization inside the kernel) only when the input channels are a
multiple of 4 and the output channels at least 16 and, on AVX2, a multiple of 8; otherwise it
takes im2col + GEMM + a separate requantization pass. A stem conv (groups 1, its input the
Quantize of a graph input, e.g. 3 RGB channels) that misses only the input-channel condition
gets zero weights for the missing channels and a Pad of its input with the zero point: the
same integers (the added channels are multiplied by 0), Pad + conv in 0.6-0.7x the time of
the plain conv for 1- and 3-channel 3x3 stems (benchmarks/onnx_kernels.py). Only there: a graph
input is NCHW in ONNX Runtime, where a channel Pad is a cheap copy; mid-network tensors are
channels-last after ORT's NHWC transform, where the same Pad makes the pair 1.3x slower.

Exactness. ONNX Runtime derives each requantization multiplier from the stored float32
scales; the exporter checks that it equals the program's `multiplier_f32` (build requant
parameters with intq.convert.requant) and raises ValueError otherwise. Under that contract,
reference "float32_half_even" == ONNX Runtime for every integer tensor and for the output of
a float-output QLinear (float32(acc)·float32(S_x·S_w[c]), the same float32 operations);
FloatOps may differ by float32 ulps (intq.runtime.float_ops).

`intermediates=True` adds every integer tensor as a graph output for agreement tests.
"""

import json
import os

import numpy as np

from intq.convert.lookup_onnx import float_nodes, table_from_onnx_runtime
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
    QTensor,
    Quantize,
    Reshape,
    ResizeNearest,
    Slice,
    Transpose,
)
from intq.convert.requant import avgpool_weight_scale
from intq.convert.serialize import atomic_write_bytes
from intq.convert.shapes import infer_shapes

__all__ = ["EXACT_ANY_X86", "EXACT_VNNI", "WEIGHT_TYPES", "export_onnx"]

WEIGHT_TYPES = ("auto", "s8", "u8")
EXACT_ANY_X86 = "x86-64"
EXACT_VNNI = "x86-64 with VNNI"
OPSET = 21
MS_DOMAIN = "com.microsoft"
# MLAS ConvSym (symmetric u8 x s8 conv) needs these channel counts on every x86 dispatch
_CONVSYM_IN_CHANNEL_ALIGN, _CONVSYM_OUT_CHANNEL_ALIGN, _CONVSYM_MIN_OUT_CHANNELS = 4, 8, 16

_FLOAT_OPS = {"sigmoid": ("Sigmoid", {}), "tanh": ("Tanh", {}), "relu": ("Relu", {}),
              "hardsigmoid": ("HardSigmoid", {"alpha": 1.0 / 6.0, "beta": 0.5}),
              "hardswish": ("HardSwish", {}), "softmax": ("Softmax", {}),
              "add": ("Add", {}), "mul": ("Mul", {})}


def export_onnx(program: IntProgram, path: str | os.PathLike | None = None, *,
                weight_type: str = "auto", intermediates: bool = False):
    """Return the onnx.ModelProto of `program`; also write it atomically to `path` if given."""
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"export_onnx: weight_type must be one of {WEIGHT_TYPES}, "
                         f"got {weight_type!r}")
    writer = _Writer(program, weight_type)
    for op in program.ops:
        writer.emit(op)
    model = writer.model(intermediates)
    if path is not None:
        atomic_write_bytes(path, model.SerializeToString())
    return model


def _island_nodes(onnx, op: FloatSubgraph, const) -> list:
    """The nodes of `op`'s ONNX graph at OPSET, renamed into the host graph: its inputs are
    `op.inputs`, its output `op.output`, everything else is prefixed "<output>/"; its
    initializers are added through `const`."""
    from onnx import version_converter

    model = onnx.load_model_from_string(op.model)
    if _default_opset(model) != OPSET:
        model = version_converter.convert_version(model, OPSET)
    graph = model.graph
    rename = {i.name: x for i, x in zip(graph.input, op.inputs, strict=True)}
    rename[graph.output[0].name] = op.output
    prefix = f"{op.output}/"
    for init in graph.initializer:
        rename[init.name] = const(prefix + init.name, onnx.numpy_helper.to_array(init))
    nodes = []
    for node in graph.node:
        new = onnx.NodeProto()
        new.CopyFrom(node)
        new.name = prefix + (node.name or node.output[0])
        new.ClearField("input")
        new.ClearField("output")
        new.input.extend(rename.get(n, prefix + n) if n else "" for n in node.input)
        new.output.extend(rename.get(n, prefix + n) for n in node.output)
        nodes.append(new)
    return nodes


def _default_opset(model) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _offset(qt: QTensor) -> int:
    return 128 if qt.dtype == "int8" else 0


class _Writer:
    """Collects nodes and initializers for one program."""

    def __init__(self, program: IntProgram, weight_type: str):
        import onnx

        self.onnx = onnx
        self.program = program
        self.tensors = program.tensors
        self.shapes = infer_shapes(program)
        self.weight_type = weight_type
        self.nodes: list = []
        self.initializers: list = []
        self.constants: set[str] = set()
        self.needs_vnni = False
        graph_inputs = {i.name for i in program.inputs}
        self.stem_inputs = {op.output for op in program.ops
                            if isinstance(op, Quantize) and op.inputs[0] in graph_inputs}
        self.channel_padded: dict[str, str] = {}
        for name, qt in self.tensors.items():
            if qt.dtype not in ("uint8", "int8"):
                raise ValueError(f"export_onnx: tensor {name!r} is {qt.dtype}; ONNX QOperator "
                                 f"ops take 8-bit activations (run 16-bit in run_reference)")

    # -- helpers ---------------------------------------------------------------------------
    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.constants:
            self.constants.add(name)
            self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def qparams(self, name: str) -> list[str]:
        """[scale, zero point] initializers of integer tensor `name`, uint8 domain."""
        qt = self.tensors[name]
        return [self.const(f"{name}/scale", np.float32(qt.scale)),
                self.const(f"{name}/zero_point", np.uint8(qt.zero_point + _offset(qt)))]

    def node(self, op_type: str, inputs: list[str], output: str, domain: str = "",
             **attrs) -> None:
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [output], name=output,
                                                     domain=domain, **attrs))

    def clamped(self, op_type: str, inputs: list[str], output: str, domain: str = "",
                **attrs) -> None:
        """Node writing `output`, followed by a Clip when the QTensor clamp is narrower than
        the dtype (fused ReLU/ReLU6)."""
        qt = self.tensors[output]
        if (qt.qmin, qt.qmax) == ACTIVATION_DTYPES[qt.dtype]:
            self.node(op_type, inputs, output, domain, **attrs)
            return
        raw = f"{output}/unclamped"
        self.node(op_type, inputs, raw, domain, **attrs)
        off = _offset(qt)
        self.node("Clip", [raw, self.const(f"{output}/qmin", np.uint8(qt.qmin + off)),
                           self.const(f"{output}/qmax", np.uint8(qt.qmax + off))], output)

    def check_multiplier(self, op: Op, expected: np.ndarray, stored: np.ndarray) -> None:
        expected = np.broadcast_to(np.asarray(expected, np.float32), stored.shape)
        if not np.array_equal(expected, stored):
            raise ValueError(f"{op.label}: requant multiplier_f32 {stored} differs from "
                             f"{expected}, which ONNX Runtime derives from the scales; build "
                             f"it with intq.convert.requant")

    def weights(self, op: QConv2d | QLinear) -> tuple[np.ndarray, np.ndarray]:
        """(weights, zero point array shaped like the scale) as int8 or uint8 (+128)."""
        if op.weight_bits > 8:
            raise ValueError(f"{op.label}: {op.weight_bits}-bit weights do not fit ONNX "
                             f"QLinearConv/QGemm (8-bit); use run_reference for them")
        w = op.weight.astype(np.int16)
        fits7 = -64 <= min(w.min(), op.weight_zero_point) and max(w.max(),
                                                                  op.weight_zero_point) <= 63
        signed = self.weight_type == "s8" or (self.weight_type == "auto" and fits7)
        self.needs_vnni |= signed and not fits7
        zp = np.full(op.weight_scale.shape, op.weight_zero_point, np.int16)
        if signed:
            return w.astype(np.int8), zp.astype(np.int8)
        return (w + 128).astype(np.uint8), (zp + 128).astype(np.uint8)

    def weight_const(self, name: str, w: np.ndarray) -> str:
        """`w` as an initializer; int8 weights in [-8, 7] are stored as packed INT4 (half the
        bytes) and read through a Cast to int8, which ONNX Runtime folds at session load."""
        if w.dtype != np.int8 or w.min() < -8 or w.max() > 7:
            return self.const(name, w)
        onnx = self.onnx
        nibbles = w.reshape(-1).view(np.uint8) & 0x0F
        nibbles = np.append(nibbles, np.uint8(0)) if nibbles.size % 2 else nibbles
        packed = (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8)
        self.initializers.append(onnx.helper.make_tensor(name, onnx.TensorProto.INT4, w.shape,
                                                         packed.tobytes(), raw=True))
        self.node("Cast", [name], f"{name}/int8", to=onnx.TensorProto.INT8)
        return f"{name}/int8"

    def convsym_missing_channels(self, op: QConv2d, w: np.ndarray) -> int:
        """Zero input channels to add so that a stem conv runs on MLAS ConvSym (see Speed in
        the module docstring); 0 when it already does, cannot, or is not a stem conv."""
        out_channels, in_channels = w.shape[:2]
        eligible = (op.groups == 1 and op.inputs[0] in self.stem_inputs
                    and w.dtype == np.int8 and op.weight_zero_point == 0
                    and out_channels >= _CONVSYM_MIN_OUT_CHANNELS
                    and out_channels % _CONVSYM_OUT_CHANNEL_ALIGN == 0)
        return -in_channels % _CONVSYM_IN_CHANNEL_ALIGN if eligible else 0

    def pad_channels(self, x: str, missing: int) -> str:
        """Name of `x` with `missing` more channels holding its zero point (one Pad node per
        tensor, shared by its consumers)."""
        if x not in self.channel_padded:
            padded = f"{x}/channels_padded"
            pads = self.const(f"{padded}/pads", np.array([0, 0, 0, 0, 0, missing, 0, 0],
                                                          np.int64))
            self.node("Pad", [x, pads, self.qparams(x)[1]], padded, mode="constant")
            self.channel_padded[x] = padded
        return self.channel_padded[x]

    def scale_vector(self, scale: np.ndarray) -> np.ndarray:
        return scale.reshape(()) if scale.size == 1 else scale

    # -- ops -------------------------------------------------------------------------------
    def emit(self, op: Op) -> None:
        getattr(self, f"emit_{type(op).__name__}")(op)

    def emit_Quantize(self, op: Quantize) -> None:
        self.clamped("QuantizeLinear", [op.inputs[0], *self.qparams(op.output)], op.output)

    def emit_Dequantize(self, op: Dequantize) -> None:
        self.node("DequantizeLinear", [op.inputs[0], *self.qparams(op.inputs[0])], op.output)

    def conv_inputs(self, op: QConv2d | QLinear) -> list[str]:
        """Input, weight and their qparams; checks the requant multiplier of an integer output."""
        x, y = op.inputs[0], op.output
        if op.requant is not None:
            sx, sy = (np.float32(self.tensors[n].scale) for n in (x, y))
            self.check_multiplier(op, (sx * op.weight_scale) / sy, op.requant.multiplier_f32)
        w, wz = self.weights(op)
        x_name = x
        if isinstance(op, QConv2d) and (missing := self.convsym_missing_channels(op, w)):
            x_name = self.pad_channels(x, missing)
            w = np.pad(w, ((0, 0), (0, missing), (0, 0), (0, 0)))
        return [x_name, *self.qparams(x), self.weight_const(f"{y}/weight", w),
                self.const(f"{y}/weight_scale", self.scale_vector(op.weight_scale)),
                self.const(f"{y}/weight_zero_point", self.scale_vector(wz))]

    def emit_QConv2d(self, op: QConv2d) -> None:
        inputs = self.conv_inputs(op) + self.qparams(op.output)
        if op.bias is not None:
            inputs.append(self.const(f"{op.output}/bias", op.bias))
        self.clamped("QLinearConv", inputs, op.output, kernel_shape=list(op.weight.shape[2:]),
                     strides=list(op.stride), pads=list(op.padding),
                     dilations=list(op.dilation), group=op.groups)

    def emit_QLinear(self, op: QLinear) -> None:
        bias = "" if op.bias is None else self.const(f"{op.output}/bias", op.bias)
        if op.requant is None:  # no y_scale / y_zero_point: QGemm writes float32
            inputs = self.conv_inputs(op) + ([] if op.bias is None else [bias])
            self.node("QGemm", inputs, op.output, domain=MS_DOMAIN, transB=1)
            return
        inputs = self.conv_inputs(op) + [bias] + self.qparams(op.output)
        self.clamped("QGemm", inputs, op.output, domain=MS_DOMAIN, transB=1)

    def emit_QAdd(self, op: QAdd) -> None:
        a, b = op.inputs
        sa, sb, sy = (np.float32(self.tensors[n].scale) for n in (a, b, op.output))
        stored = np.array([op.requant.multiplier_a_f32, op.requant.multiplier_b_f32], np.float32)
        self.check_multiplier(op, np.array([sa / sy, sb / sy]), stored)
        self.clamped("QLinearAdd", [a, *self.qparams(a), b, *self.qparams(b),
                                    *self.qparams(op.output)], op.output, domain=MS_DOMAIN)

    def emit_QAvgPool2d(self, op: QAvgPool2d) -> None:
        x, y = op.inputs[0], op.output
        channels = self.shapes[x][1] if self.shapes[x] else None
        if channels is None:
            raise ValueError(f"{op.label}: the channel count must be known to export an "
                             f"average pool as a depthwise QLinearConv")
        count = op.kernel[0] * op.kernel[1]
        ws = avgpool_weight_scale(count)
        sx, sy = np.float32(self.tensors[x].scale), np.float32(self.tensors[y].scale)
        self.check_multiplier(op, (sx * ws) / sy, op.requant.multiplier_f32)
        inputs = [x, *self.qparams(x),
                  self.const(f"{y}/weight", np.ones((channels, 1, *op.kernel), np.int8)),
                  self.const(f"{y}/weight_scale", ws),
                  self.const(f"{y}/weight_zero_point", np.int8(0)), *self.qparams(y)]
        self.clamped("QLinearConv", inputs, y, kernel_shape=list(op.kernel),
                     strides=list(op.stride), pads=list(op.padding), group=channels)

    def emit_QGlobalAvgPool(self, op: QGlobalAvgPool) -> None:
        x, y = op.inputs[0], op.output
        sx, sy = np.float32(self.tensors[x].scale), np.float32(self.tensors[y].scale)
        expected = sx / (sy * np.float32(op.count))
        self.check_multiplier(op, expected, op.requant.multiplier_f32)
        if not 2.0**-32 <= expected < 256.0:
            raise ValueError(f"{op.label}: multiplier {expected} is outside ONNX Runtime's "
                             f"QLinearGlobalAveragePool range [2^-32, 256)")
        self.clamped("QLinearGlobalAveragePool", [x, *self.qparams(x), *self.qparams(y)], y,
                     domain=MS_DOMAIN, channels_last=0)

    def emit_QConcat(self, op: QConcat) -> None:
        self.node("Concat", list(op.inputs), op.output, axis=op.axis)

    def emit_QMaxPool2d(self, op: QMaxPool2d) -> None:
        x, pads = op.inputs[0], list(op.padding)
        if max(pads[0], pads[2]) >= op.kernel[0] or max(pads[1], pads[3]) >= op.kernel[1]:
            # ORT's MaxPool needs pads < kernel (a dilated kernel may have more): pad with
            # code 0, the smallest, never a window's maximum (each window has a real pixel)
            x = f"{op.output}/padded"
            top, left, bottom, right = pads
            self.node("Pad", [op.inputs[0], self.const(f"{x}/pads", np.array(
                [0, 0, top, left, 0, 0, bottom, right], np.int64)),
                self.const(f"{x}/value", np.uint8(0))], x, mode="constant")
            pads = [0, 0, 0, 0]
        self.node("MaxPool", [x], op.output, kernel_shape=list(op.kernel),
                  strides=list(op.stride), pads=pads, dilations=list(op.dilation))

    def emit_Reshape(self, op: Reshape) -> None:
        shape = self.const(f"{op.output}/shape", np.array(op.shape, np.int64))
        self.node("Reshape", [op.inputs[0], shape], op.output)

    def emit_Flatten(self, op: Flatten) -> None:
        self.node("Flatten", [op.inputs[0]], op.output, axis=1)

    def emit_Pad(self, op: Pad) -> None:
        top, left, bottom, right = op.padding
        qt = self.tensors[op.inputs[0]]
        pads = self.const(f"{op.output}/pads", np.array([0, 0, top, left, 0, 0, bottom, right],
                                                        np.int64))
        value = self.const(f"{op.output}/value", np.uint8(qt.zero_point + _offset(qt)))
        self.node("Pad", [op.inputs[0], pads, value], op.output, mode="constant")

    def emit_FloatOp(self, op: FloatOp) -> None:
        if op.op == "callable":
            raise ValueError(f"{op.label}: a callable FloatOp cannot be exported; use one of "
                             f"{sorted(_FLOAT_OPS)}")
        op_type, attrs = _FLOAT_OPS[op.op]
        self.node(op_type, list(op.inputs), op.output, **attrs, **op.attrs)

    def emit_FloatSubgraph(self, op: FloatSubgraph) -> None:
        for node in _island_nodes(self.onnx, op, self.const):
            self.nodes.append(node)

    def emit_QLookup(self, op: QLookup) -> None:
        x, y = op.inputs[0], op.output
        qx, qy = self.tensors[x], self.tensors[y]
        exact_range = (qy.qmin, qy.qmax) == ACTIVATION_DTYPES[qy.dtype]
        raw = y if exact_range else f"{y}/unclamped"
        fast = None
        if np.array_equal(table_from_onnx_runtime(op.function, op.params, qx, qy), op.table):
            fast = float_nodes(op.function, op.params, x, raw, qx, qy, self.const)
        if fast is not None:  # the table is what these nodes compute: emit them
            self.nodes.extend(fast)
            if not exact_range:
                off = _offset(qy)
                self.node("Clip", [raw, self.const(f"{y}/qmin", np.uint8(qy.qmin + off)),
                                   self.const(f"{y}/qmax", np.uint8(qy.qmax + off))], y)
            return
        table = (op.table + _offset(qy)).astype(np.uint8)
        index = f"{y}/index"
        self.node("Cast", [x], index, to=self.onnx.TensorProto.INT32)
        self.node("Gather", [self.const(f"{y}/table", table), index], y, axis=0)

    def emit_QMul(self, op: QMul) -> None:
        a, b = op.inputs
        self.clamped("QLinearMul", [a, *self.qparams(a), b, *self.qparams(b),
                                    *self.qparams(op.output)], op.output, domain=MS_DOMAIN)

    def emit_Transpose(self, op: Transpose) -> None:
        self.node("Transpose", [op.inputs[0]], op.output, perm=list(op.perm))

    def emit_Slice(self, op: Slice) -> None:
        y = op.output
        values = {"starts": op.start, "ends": op.stop, "axes": op.axis, "steps": op.step}
        self.node("Slice", [op.inputs[0]] + [self.const(f"{y}/{k}", np.array([v], np.int64))
                                             for k, v in values.items()], y)

    def emit_ResizeNearest(self, op: ResizeNearest) -> None:
        y = op.output
        scales = np.array([1, 1, *op.factors], np.float32)
        self.node("Resize", [op.inputs[0], "", self.const(f"{y}/scales", scales)], y,
                  mode="nearest", coordinate_transformation_mode="asymmetric",
                  nearest_mode="floor")

    # -- model -----------------------------------------------------------------------------
    def value_info(self, name: str, elem_type: int):
        shape = self.shapes.get(name)
        dims = None if shape is None else [f"N{i}" if d is None else d
                                           for i, d in enumerate(shape)]
        return self.onnx.helper.make_tensor_value_info(name, elem_type, dims)

    def model(self, intermediates: bool):
        onnx = self.onnx
        float_t, uint8_t = onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8
        program = self.program
        int_outputs = list(self.tensors) if intermediates else []
        graph = onnx.helper.make_graph(
            self.nodes, program.metadata.get("name", "intq_program"),
            [self.value_info(i.name, float_t) for i in program.inputs],
            [self.value_info(n, float_t) for n in program.outputs]
            + [self.value_info(n, uint8_t) for n in int_outputs],
            self.initializers)
        model = onnx.helper.make_model(
            graph, producer_name="intq", ir_version=10,
            opset_imports=[onnx.helper.make_opsetid("", OPSET),
                           onnx.helper.make_opsetid(MS_DOMAIN, 1)])
        meta = {
            "intq.outputs": json.dumps(list(program.outputs)),
            "intq.intermediates": json.dumps(int_outputs),
            "intq.dtypes": json.dumps({n: t.dtype for n, t in self.tensors.items()}),
            "intq.exact_on": EXACT_VNNI if self.needs_vnni else EXACT_ANY_X86,
        }
        onnx.helper.set_model_props(model, meta)
        return model
