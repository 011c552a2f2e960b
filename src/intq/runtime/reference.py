"""Reference interpreter: runs an IntProgram in numpy, integer-exact by construction (the oracle).

    outputs = run_reference(program, x)                                   # {output name: array}
    every = run_reference(program, x, mode="fixed_point", return_all=True)  # every tensor

Two semantics (`mode`, see intq.runtime.requantize): "float32_half_even" reproduces ONNX
Runtime on the exported model, "fixed_point" is gemmlowp/TFLite. A float-output QLinear
computes float32(acc)·float32(S_x·S_w[c]) in both, with ONNX Runtime's float32 operations.
Accumulators are exact (float64 BLAS on integer values, intq.runtime.integer_kernels); an
accumulator outside int32 raises ValueError naming the op, as does any shape or dtype
mismatch. Integer tensors come back in their QTensor dtype, float tensors as float32.

Feeding: `inputs` is an array (single-input programs) or a mapping from tensor names to
arrays. Any tensor may be fed, e.g. the integer output of the first Quantize; ops whose
output is fed are skipped. Float arrays are cast to float32 first.
"""

from collections.abc import Callable, Mapping

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
from intq.runtime import requantize as rq
from intq.runtime.float_ops import run_float_op, run_float_subgraph
from intq.runtime.integer_kernels import (
    check_exact,
    conv2d_accumulate,
    linear_accumulate,
    max_pool2d,
    sum_pool2d,
)

__all__ = ["run_reference"]

_INT32_MAX = 2**31 - 1


def run_reference(program: IntProgram, inputs: np.ndarray | Mapping[str, np.ndarray], *,
                  mode: str = "float32_half_even",
                  return_all: bool = False) -> dict[str, np.ndarray]:
    """Run `program`; return its outputs by name, or every computed tensor if return_all."""
    if mode not in rq.MODES:
        raise ValueError(f"run_reference: mode must be one of {rq.MODES}, got {mode!r}")
    env = _feed(program, inputs)
    for op in program.ops:
        if op.output in env or not all(name in env for name in op.inputs):
            continue
        args = [env[name] for name in op.inputs]
        env[op.output] = _KERNELS[type(op)](op, args, program.tensors, mode)
    missing = [name for name in program.outputs if name not in env]
    if missing:
        raise ValueError(f"run_reference: outputs {missing} cannot be computed from the fed "
                         f"tensors {sorted(_names(program, inputs))}")
    return env if return_all else {name: env[name] for name in program.outputs}


def _names(program: IntProgram, inputs) -> list[str]:
    return [program.inputs[0].name] if isinstance(inputs, np.ndarray) else list(inputs)


def _feed(program: IntProgram, inputs) -> dict[str, np.ndarray]:
    if not isinstance(inputs, Mapping):
        if len(program.inputs) != 1:
            raise ValueError(f"run_reference: the program has {len(program.inputs)} inputs; "
                             f"pass a mapping from input names to arrays")
        inputs = {program.inputs[0].name: inputs}
    floats = {i.name: i.shape for i in program.inputs}
    floats.update({op.output: None for op in program.ops if op.output not in program.tensors})
    env = {}
    for name, value in inputs.items():
        value = np.asarray(value)
        if name in program.tensors:
            env[name] = _integer_feed(name, value, program.tensors[name])
        elif name in floats:
            env[name] = _float_feed(name, value, floats[name])
        else:
            raise ValueError(f"run_reference: {name!r} is not a tensor of the program")
    return env


def _integer_feed(name: str, value: np.ndarray, qt: QTensor) -> np.ndarray:
    if value.dtype.kind not in "iu" or (value.size and (value.min() < qt.qmin or
                                                        value.max() > qt.qmax)):
        raise ValueError(f"run_reference: integer tensor {name!r} needs integers in "
                         f"[{qt.qmin}, {qt.qmax}], got dtype {value.dtype}")
    return value.astype(qt.dtype)


def _float_feed(name: str, value: np.ndarray, shape) -> np.ndarray:
    if value.dtype.kind != "f":
        raise ValueError(f"run_reference: float tensor {name!r} needs a float array, "
                         f"got dtype {value.dtype}")
    if shape is not None and (value.ndim != len(shape) or any(
            d is not None and d != v for d, v in zip(shape, value.shape, strict=True))):
        raise ValueError(f"run_reference: input {name!r} must have shape {shape} "
                         f"(None = any), got {value.shape}")
    return value.astype(np.float32)


def _rank(op: Op, x: np.ndarray, rank: int, channels: int | None = None) -> None:
    if x.ndim != rank or (channels is not None and x.shape[1] != channels):
        want = f"rank {rank}" + ("" if channels is None else f" with {channels} channels")
        raise ValueError(f"{op.label}: input needs {want}, got shape {x.shape}")


def _centered(x: np.ndarray, zero_point: int) -> np.ndarray:
    return x.astype(np.float64) - zero_point


def _int32(acc: np.ndarray, op: Op) -> np.ndarray:
    peak = float(np.abs(acc).max(initial=0))
    if peak > _INT32_MAX:
        raise ValueError(f"{op.label}: int32 accumulator overflow (|acc| reaches {peak:.0f} > "
                         f"2^31 - 1); use fewer weight/activation bits or a smaller fan-in")
    return acc.astype(np.int64)


def _weighted_acc(op: QConv2d | QLinear, x: np.ndarray, qx: QTensor) -> np.ndarray:
    xc = _centered(x, qx.zero_point)
    wc = _centered(op.weight, op.weight_zero_point)
    check_exact(xc, wc, int(np.prod(op.weight.shape[1:])), op.label)
    if isinstance(op, QConv2d):
        acc = conv2d_accumulate(xc, wc, op.stride, op.padding, op.dilation, op.groups)
    else:
        acc = linear_accumulate(xc, wc)
    if op.bias is not None:
        acc += op.bias.reshape((-1,) + (1,) * (acc.ndim - 2))
    return _int32(acc, op)


def _conv(op: QConv2d, args, tensors, mode):
    _rank(op, args[0], 4, op.weight.shape[1] * op.groups)
    acc = _weighted_acc(op, args[0], tensors[op.inputs[0]])
    return rq.requantize(acc, op.requant, tensors[op.output], mode)


def _linear(op: QLinear, args, tensors, mode):
    _rank(op, args[0], 2, op.weight.shape[1])
    qx = tensors[op.inputs[0]]
    acc = _weighted_acc(op, args[0], qx)
    if op.requant is None:
        return rq.dequantize_accumulator(acc, qx.scale, op.weight_scale)
    return rq.requantize(acc, op.requant, tensors[op.output], mode)


def _add(op: QAdd, args, tensors, mode):
    a, b = args
    if a.shape != b.shape:
        raise ValueError(f"{op.label}: inputs must have one shape, got {a.shape} and {b.shape}")
    qa, qb = (tensors[name] for name in op.inputs)
    return rq.add(a, b, qa, qb, tensors[op.output], op.requant, mode)


def _avg_pool(op: QAvgPool2d, args, tensors, mode):
    _rank(op, args[0], 4)
    acc = sum_pool2d(_centered(args[0], tensors[op.inputs[0]].zero_point), op.kernel,
                     op.stride, op.padding)
    return rq.requantize(_int32(acc, op), op.requant, tensors[op.output], mode)


def _global_avg_pool(op: QGlobalAvgPool, args, tensors, mode):
    x = args[0]
    _rank(op, x, 4)
    if x.shape[2] * x.shape[3] != op.count:
        raise ValueError(f"{op.label}: H·W = {x.shape[2]}·{x.shape[3]} != count {op.count}")
    acc = _centered(x, tensors[op.inputs[0]].zero_point).sum(axis=(2, 3), keepdims=True)
    return rq.requantize(_int32(acc, op), op.requant, tensors[op.output], mode)


def _max_pool(op: QMaxPool2d, args, tensors, mode):
    _rank(op, args[0], 4)
    return max_pool2d(args[0], op.kernel, op.stride, op.padding, op.dilation)


def _concat(op: QConcat, args, tensors, mode):
    try:
        return np.concatenate(args, axis=op.axis)
    except (ValueError, np.exceptions.AxisError) as err:
        raise ValueError(f"{op.label}: {err}") from None


def _reshape(op: Reshape, args, tensors, mode):
    try:
        return args[0].reshape(op.shape)
    except ValueError as err:
        raise ValueError(f"{op.label}: {err}") from None


def _flatten(op: Flatten, args, tensors, mode):
    return args[0].reshape(args[0].shape[0], -1)


def _pad(op: Pad, args, tensors, mode):
    _rank(op, args[0], 4)
    top, left, bottom, right = op.padding
    return np.pad(args[0], ((0, 0), (0, 0), (top, bottom), (left, right)),
                  constant_values=tensors[op.inputs[0]].zero_point)


def _lookup(op: QLookup, args, tensors, mode):
    offset = np.iinfo(tensors[op.inputs[0]].dtype).min
    return op.table[args[0].astype(np.int64) - offset].astype(tensors[op.output].dtype)


def _mul(op: QMul, args, tensors, mode):
    qa, qb = (tensors[name] for name in op.inputs)
    try:
        np.broadcast_shapes(args[0].shape, args[1].shape)
    except ValueError:
        raise ValueError(f"{op.label}: shapes {args[0].shape} and {args[1].shape} do not "
                         f"broadcast") from None
    return rq.mul(args[0], args[1], qa, qb, tensors[op.output], mode)


def _transpose(op: Transpose, args, tensors, mode):
    _rank(op, args[0], len(op.perm))
    return np.ascontiguousarray(args[0].transpose(op.perm))


def _slice(op: Slice, args, tensors, mode):
    x = args[0]
    if op.axis >= x.ndim or op.stop > x.shape[op.axis]:
        raise ValueError(f"{op.label}: slice {op.start}:{op.stop} of axis {op.axis} does not "
                         f"fit shape {x.shape}")
    index = [slice(None)] * x.ndim
    index[op.axis] = slice(op.start, op.stop, op.step)
    return np.ascontiguousarray(x[tuple(index)])


def _resize_nearest(op: ResizeNearest, args, tensors, mode):
    _rank(op, args[0], 4)
    fh, fw = op.factors
    return args[0].repeat(fh, axis=2).repeat(fw, axis=3)


_KERNELS: dict[type, Callable] = {
    Quantize: lambda op, args, t, mode: rq.quantize(args[0], t[op.output], mode),
    Dequantize: lambda op, args, t, mode: rq.dequantize(args[0], t[op.inputs[0]]),
    QConv2d: _conv,
    QLinear: _linear,
    QAdd: _add,
    QConcat: _concat,
    QAvgPool2d: _avg_pool,
    QGlobalAvgPool: _global_avg_pool,
    QMaxPool2d: _max_pool,
    Reshape: _reshape,
    Flatten: _flatten,
    Pad: _pad,
    FloatOp: lambda op, args, t, mode: run_float_op(op, args),
    FloatSubgraph: lambda op, args, t, mode: run_float_subgraph(op, args),
    QLookup: _lookup,
    QMul: _mul,
    Transpose: _transpose,
    Slice: _slice,
    ResizeNearest: _resize_nearest,
}
