"""Static shape inference for an IntProgram: every tensor's shape from the input shapes.

None is an unknown (dynamic) dimension, usually the batch. A shape that cannot be known
(the output of a FloatOp "callable") is None as a whole. Channel mismatches raise ValueError
naming the op, so a converter bug shows up when the program is built, not when it runs.
"""

import math

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
    Quantize,
    Reshape,
    ResizeNearest,
    Slice,
    Transpose,
)

__all__ = ["Shape", "conv_output_size", "infer_op_shape", "infer_shapes"]

Shape = tuple[int | None, ...] | None


def conv_output_size(size: int | None, kernel: int, stride: int, pad_before: int,
                     pad_after: int, dilation: int = 1) -> int | None:
    """floor((size + pads - dilation·(kernel - 1) - 1) / stride) + 1 (conv and pools, floor)."""
    if size is None:
        return None
    span = size + pad_before + pad_after - dilation * (kernel - 1) - 1
    if span < 0:
        raise ValueError(f"input size {size} with padding ({pad_before}, {pad_after}) is "
                         f"smaller than the dilated kernel {dilation * (kernel - 1) + 1}")
    return span // stride + 1


def infer_shapes(program: IntProgram) -> dict[str, Shape]:
    """Shape of every tensor of `program`, program inputs first, in op order."""
    shapes: dict[str, Shape] = {i.name: i.shape for i in program.inputs}
    for op in program.ops:
        shapes[op.output] = infer_op_shape(op, [shapes[name] for name in op.inputs])
    return shapes


def infer_op_shape(op: Op, input_shapes: list[Shape]) -> Shape:
    """Output shape of `op` given its input shapes; ValueError names the op on a mismatch."""
    try:
        return _infer(op, input_shapes)
    except ValueError as err:
        raise ValueError(f"{op.label}: {err}") from None


def _rank4(shape: Shape) -> tuple[int | None, ...] | None:
    if shape is not None and len(shape) != 4:
        raise ValueError(f"expected an NCHW input, got shape {shape}")
    return shape


def _spatial(shape, kernel, stride, padding, dilation=(1, 1)):
    n, c, h, w = shape
    top, left, bottom, right = padding
    return (n, c, conv_output_size(h, kernel[0], stride[0], top, bottom, dilation[0]),
            conv_output_size(w, kernel[1], stride[1], left, right, dilation[1]))


def _channels(got: int | None, want: int, what: str) -> None:
    if got is not None and got != want:
        raise ValueError(f"{what}: expected {want} input channels, got {got}")


def _infer(op: Op, ins: list[Shape]) -> Shape:
    if any(s is None for s in ins):
        return None
    if isinstance(op, Quantize | Dequantize):
        return ins[0]
    if isinstance(op, QConv2d):
        x = _rank4(ins[0])
        out_c, in_per_group, kh, kw = op.weight.shape
        _channels(x[1], in_per_group * op.groups, "weight")
        n, _, h, w = _spatial(x, (kh, kw), op.stride, op.padding, op.dilation)
        return n, out_c, h, w
    if isinstance(op, QLinear):
        if len(ins[0]) != 2:
            raise ValueError(f"expected an (N, K) input, got shape {ins[0]}")
        _channels(ins[0][1], op.weight.shape[1], "weight")
        return ins[0][0], op.weight.shape[0]
    if isinstance(op, QAdd):
        return _same_shape(ins)
    if isinstance(op, QConcat):
        return _concat(ins, op.axis)
    if isinstance(op, QAvgPool2d):
        return _spatial(_rank4(ins[0]), op.kernel, op.stride, op.padding)
    if isinstance(op, QMaxPool2d):
        return _spatial(_rank4(ins[0]), op.kernel, op.stride, op.padding, op.dilation)
    if isinstance(op, QGlobalAvgPool):
        n, c, h, w = _rank4(ins[0])
        if h is not None and w is not None and h * w != op.count:
            raise ValueError(f"count {op.count} != H·W = {h}·{w}")
        return n, c, 1, 1
    if isinstance(op, Pad):
        n, c, h, w = _rank4(ins[0])
        top, left, bottom, right = op.padding
        return (n, c, None if h is None else h + top + bottom,
                None if w is None else w + left + right)
    if isinstance(op, Flatten):
        rest = ins[0][1:]
        return ins[0][0], (None if None in rest else math.prod(rest))
    if isinstance(op, Reshape):
        return _reshape(ins[0], op.shape)
    if isinstance(op, FloatOp):
        return None if op.op == "callable" else _broadcast(ins)
    if isinstance(op, FloatSubgraph):
        return op.output_shape
    if isinstance(op, QLookup):
        return ins[0]
    if isinstance(op, QMul):
        return _broadcast(ins)
    if isinstance(op, Transpose):
        if len(op.perm) != len(ins[0]):
            raise ValueError(f"perm {op.perm} does not match rank {len(ins[0])}")
        return tuple(ins[0][p] for p in op.perm)
    if isinstance(op, Slice):
        return _slice(ins[0], op)
    if isinstance(op, ResizeNearest):
        n, c, h, w = _rank4(ins[0])
        fh, fw = op.factors
        return n, c, None if h is None else h * fh, None if w is None else w * fw
    raise ValueError(f"no shape rule for {type(op).__name__}")


def _slice(shape: tuple, op: Slice) -> tuple:
    if op.axis >= len(shape):
        raise ValueError(f"axis {op.axis} is outside rank {len(shape)}")
    size = shape[op.axis]
    if size is not None and op.stop > size:
        raise ValueError(f"slice {op.start}:{op.stop} exceeds size {size} of axis {op.axis}")
    out = list(shape)
    out[op.axis] = len(range(op.start, op.stop, op.step))
    return tuple(out)


def _same_shape(ins: list[tuple]) -> tuple:
    a, b = ins
    if len(a) != len(b) or any(x is not None and y is not None and x != y
                               for x, y in zip(a, b, strict=True)):
        raise ValueError(f"inputs must have one shape, got {a} and {b}")
    return tuple(x if x is not None else y for x, y in zip(a, b, strict=True))


def _concat(ins: list[tuple], axis: int) -> tuple:
    rank = len(ins[0])
    if not -rank <= axis < rank or any(len(s) != rank for s in ins):
        raise ValueError(f"axis {axis} and input ranks {[len(s) for s in ins]} do not match")
    axis %= rank
    out = list(ins[0])
    for s in ins[1:]:
        for d in range(rank):
            if d != axis and None not in (s[d], out[d]) and s[d] != out[d]:
                raise ValueError(f"inputs differ outside axis {axis}: {ins}")
    sizes = [s[axis] for s in ins]
    out[axis] = None if None in sizes else sum(sizes)
    return tuple(out)


def _reshape(shape: tuple, target: tuple[int, ...]) -> tuple:
    known_in = math.prod(d for d in shape if d is not None)
    known_out = math.prod(d for d in target if d != -1)
    if None not in shape:
        if -1 in target:
            if known_in % known_out:
                raise ValueError(f"cannot reshape {shape} to {target}")
            return tuple(known_in // known_out if d == -1 else d for d in target)
        if known_in != known_out:
            raise ValueError(f"cannot reshape {shape} to {target}")
        return target
    if -1 in target and known_in == known_out:
        return tuple(None if d == -1 else d for d in target)
    raise ValueError(f"cannot resolve reshape of {shape} to {target}: put -1 where the "
                     f"dynamic dimension goes")


def _broadcast(ins: list[tuple]) -> tuple:
    rank = max(len(s) for s in ins)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in ins]
    out = []
    for dims in zip(*padded, strict=True):
        sizes = {d for d in dims if d != 1}
        if len(sizes - {None}) > 1:
            raise ValueError(f"shapes {ins} do not broadcast")
        known = sizes - {None}
        out.append(known.pop() if known else (None if None in sizes else 1))
    return tuple(out)
