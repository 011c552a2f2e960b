"""ProgramBuilder: build an IntProgram op by op, with requantization parameters derived for you.

    b = ProgramBuilder()
    x = b.input("x", (None, 3, 32, 32))
    q = b.quantize(x, QTensor(0.02, 128, "uint8"))
    c = b.conv2d(q, w_int8, w_scale, QTensor(0.05, 0, "uint8"), bias=b_int32, padding=1)
    p = b.global_avg_pool(c, QTensor(0.04, 0, "uint8"))
    f = b.flatten(p)
    y = b.linear(f, fc_int8, fc_scale, QTensor(0.1, 128, "uint8"), bias=fc_bias)
    program = b.build([b.dequantize(y, name="logits")])
    # or float logits straight from the accumulator: b.build([b.linear(f, ..., None)])

Each method returns the name of the tensor it writes (auto-named "<kind><n>" unless `name`
is given). Requantizing ops take the output QTensor (its qmin/qmax is the fused clamp);
`linear` with out=None writes a float32 tensor (float-output QLinear). Lossless ops (max
pool, concat, reshape, flatten, pad) copy their input's QTensor; reshape and flatten of a
float tensor give a float tensor. Shapes are inferred as ops are added, so a channel
mismatch fails at the offending call.
"""

from collections.abc import Callable, Sequence

from intq.convert.program import (
    Dequantize,
    Flatten,
    FloatOp,
    FloatSubgraph,
    Input,
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
    add_requant,
    avgpool_requant,
    conv_requant,
    global_avgpool_requant,
)
from intq.convert.shapes import Shape, infer_op_shape

__all__ = ["ProgramBuilder"]


class ProgramBuilder:
    """Accumulates inputs, ops and QTensors; `build` validates and returns the IntProgram."""

    def __init__(self) -> None:
        self._inputs: list[Input] = []
        self._ops: list[Op] = []
        self._tensors: dict[str, QTensor] = {}
        self._shapes: dict[str, Shape] = {}

    def qtensor(self, name: str) -> QTensor:
        """The QTensor of integer tensor `name`."""
        return self._tensors[name]

    def is_float(self, name: str) -> bool:
        """True when the known tensor `name` is float32 (no QTensor)."""
        if name not in self._shapes:
            raise ValueError(f"ProgramBuilder: unknown tensor {name!r}")
        return name not in self._tensors

    def shape(self, name: str) -> Shape:
        """The inferred shape of tensor `name` (None dims are dynamic)."""
        return self._shapes[name]

    def input(self, name: str, shape: Sequence[int | None]) -> str:
        """Declare a float32 program input."""
        self._fresh(name)
        self._inputs.append(Input(name, tuple(shape)))
        self._shapes[name] = self._inputs[-1].shape
        return name

    def quantize(self, x: str, out: QTensor, name: str | None = None) -> str:
        return self._add(Quantize(x, self._name(name, "quantize")), out)

    def dequantize(self, q: str, name: str | None = None) -> str:
        return self._add(Dequantize(q, self._name(name, "dequantize")), None)

    def conv2d(self, x: str, weight, weight_scale, out: QTensor, *, bias=None, stride=1,
               padding=0, dilation=1, groups: int = 1, weight_zero_point: int = 0,
               weight_bits: int = 8, name: str | None = None) -> str:
        requant = conv_requant(self._tensors[x].scale, weight_scale, out.scale)
        op = QConv2d(x, self._name(name, "conv"), weight, weight_scale, requant, bias=bias,
                     weight_zero_point=weight_zero_point, weight_bits=weight_bits,
                     stride=stride, padding=padding, dilation=dilation, groups=groups)
        return self._add(op, out)

    def linear(self, x: str, weight, weight_scale, out: QTensor | None, *, bias=None,
               weight_zero_point: int = 0, weight_bits: int = 8,
               name: str | None = None) -> str:
        """Integer output on `out`'s grid, or float32(acc)·float32(S_x·S_w[c]) if out is None."""
        requant = None if out is None else conv_requant(self._tensors[x].scale, weight_scale,
                                                        out.scale)
        op = QLinear(x, self._name(name, "linear"), weight, weight_scale, requant, bias=bias,
                     weight_zero_point=weight_zero_point, weight_bits=weight_bits)
        return self._add(op, out)

    def add(self, a: str, b: str, out: QTensor, name: str | None = None) -> str:
        bits = 16 if out.dtype.endswith("16") else 8
        requant = add_requant(self._tensors[a].scale, self._tensors[b].scale, out.scale, bits)
        return self._add(QAdd(a, b, self._name(name, "add"), requant), out)

    def avg_pool2d(self, x: str, kernel, out: QTensor, *, stride=None, padding=0,
                   name: str | None = None) -> str:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        requant = avgpool_requant(self._tensors[x].scale, kh * kw, out.scale)
        op = QAvgPool2d(x, self._name(name, "avgpool"), (kh, kw), requant, stride=stride,
                        padding=padding)
        return self._add(op, out)

    def global_avg_pool(self, x: str, out: QTensor, name: str | None = None) -> str:
        shape = self._shapes[x]
        if shape is None or len(shape) != 4 or None in shape[2:]:
            raise ValueError(f"global_avg_pool: input {x!r} needs a known NCHW spatial size, "
                             f"got {shape}")
        count = shape[2] * shape[3]
        requant = global_avgpool_requant(self._tensors[x].scale, count, out.scale)
        return self._add(QGlobalAvgPool(x, self._name(name, "gap"), count, requant), out)

    def max_pool2d(self, x: str, kernel, *, stride=None, padding=0, dilation=1,
                   name: str | None = None) -> str:
        op = QMaxPool2d(x, self._name(name, "maxpool"), kernel, stride=stride, padding=padding,
                        dilation=dilation)
        return self._add(op, self._tensors[x])

    def concat(self, xs: Sequence[str], axis: int = 1, name: str | None = None) -> str:
        first = self._tensors[xs[0]]
        out = QTensor(first.scale, first.zero_point, first.dtype,
                      min(self._tensors[x].qmin for x in xs),
                      max(self._tensors[x].qmax for x in xs))
        return self._add(QConcat(tuple(xs), self._name(name, "concat"), axis), out)

    def reshape(self, x: str, shape: Sequence[int], name: str | None = None) -> str:
        return self._add(Reshape(x, self._name(name, "reshape"), shape), self._tensors.get(x))

    def flatten(self, x: str, name: str | None = None) -> str:
        return self._add(Flatten(x, self._name(name, "flatten")), self._tensors.get(x))

    def pad(self, x: str, padding, name: str | None = None) -> str:
        return self._add(Pad(x, self._name(name, "pad"), padding), self._tensors[x])

    def float_op(self, inputs: str | Sequence[str], op: str, attrs: dict | None = None,
                 fn: Callable | None = None, name: str | None = None,
                 shape: Shape = None) -> str:
        """A FloatOp; `shape` is its output shape when the caller knows it (a "callable"
        is opaque to shape inference)."""
        inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
        out = self._add(FloatOp(inputs, self._name(name, op), op, attrs, fn), None)
        if shape is not None and self._shapes[out] is None:
            self._shapes[out] = tuple(shape)
        return out

    def float_subgraph(self, inputs: Sequence[str], model: bytes, output_shape=None,
                       source: str = "", name: str | None = None) -> str:
        op = FloatSubgraph(tuple(inputs), self._name(name, "float"), model, output_shape, source)
        return self._add(op, None)

    def lookup(self, x: str, table, out: QTensor, function: str = "", params=(),
               name: str | None = None) -> str:
        return self._add(QLookup(x, self._name(name, "lookup"), table, function, params), out)

    def mul(self, a: str, b: str, out: QTensor, name: str | None = None) -> str:
        return self._add(QMul(a, b, self._name(name, "mul")), out)

    def transpose(self, x: str, perm: Sequence[int], name: str | None = None) -> str:
        return self._add(Transpose(x, self._name(name, "transpose"), perm), self._tensors.get(x))

    def slice(self, x: str, axis: int, start: int, stop: int, step: int = 1,
              name: str | None = None) -> str:
        op = Slice(x, self._name(name, "slice"), axis, start, stop, step)
        return self._add(op, self._tensors.get(x))

    def resize_nearest(self, x: str, factors, name: str | None = None) -> str:
        op = ResizeNearest(x, self._name(name, "resize"), factors)
        return self._add(op, self._tensors.get(x))

    def build(self, outputs: Sequence[str], metadata: dict[str, str] | None = None) -> IntProgram:
        """Validate and return the program with the given float outputs."""
        return IntProgram(tuple(self._inputs), tuple(outputs), dict(self._tensors),
                          tuple(self._ops), dict(metadata or {}))

    def _name(self, name: str | None, kind: str) -> str:
        if name is None:
            taken = set(self._shapes)
            name = next(f"{kind}{i}" for i in range(len(taken) + 1) if f"{kind}{i}" not in taken)
        self._fresh(name)
        return name

    def _fresh(self, name: str) -> None:
        if name in self._shapes:
            raise ValueError(f"ProgramBuilder: tensor name {name!r} is already used")

    def _add(self, op: Op, out: QTensor | None) -> str:
        for name in op.inputs:
            if name not in self._shapes:
                raise ValueError(f"{op.label}: unknown input tensor {name!r}")
        float_inputs, float_output = op.float_io(self._tensors)
        for name in op.inputs:
            if (name in self._tensors) == float_inputs:
                raise ValueError(f"{op.label}: input {name!r} has the wrong kind (int/float)")
        assert (out is None) == float_output, f"{op.label}: output QTensor {out}"
        if out is not None:
            op.check({**self._tensors, op.output: out})
        shape = infer_op_shape(op, [self._shapes[n] for n in op.inputs])
        self._ops.append(op)
        self._shapes[op.output] = shape
        if out is not None:
            self._tensors[op.output] = out
        return op.output
