"""float32 numpy semantics of FloatOp (the float fallback regions of an IntProgram).

Each formula is the ONNX operator the exporter writes (HardSigmoid/HardSwish with alpha = 1/6,
beta = 1/2). ONNX Runtime evaluates sigmoid, tanh and exp with its own polynomial
approximations, so results can differ in the last float32 bits; after the Quantize that
follows a float region that is at most 1 LSB, on values that fall next to a rounding boundary.
"""

from collections.abc import Callable

import numpy as np

from intq.convert.program import FloatOp

__all__ = ["run_float_op"]

_SIXTH = np.float32(1.0 / 6.0)
_HALF = np.float32(0.5)


def _hardsigmoid(x: np.ndarray) -> np.ndarray:
    return np.clip(_SIXTH * x + _HALF, np.float32(0), np.float32(1))


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


_UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda x: np.float32(1) / (np.float32(1) + np.exp(-x)),
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, np.float32(0)),
    "hardsigmoid": _hardsigmoid,
    "hardswish": lambda x: x * _hardsigmoid(x),
}


def run_float_op(op: FloatOp, args: list[np.ndarray]) -> np.ndarray:
    """Evaluate `op` on float32 arrays; returns float32 (ValueError for a non-float result)."""
    if op.op == "callable":
        out = np.asarray(op.fn(*args))
    elif op.op in _UNARY:
        out = _UNARY[op.op](args[0])
    elif op.op == "softmax":
        out = _softmax(args[0], op.attrs.get("axis", -1))
    else:
        out = np.add(*args) if op.op == "add" else np.multiply(*args)
    if out.dtype.kind != "f" or not np.isfinite(out).all():
        raise ValueError(f"{op.label}: produced a non-finite or non-float result "
                         f"(dtype {out.dtype})")
    return out.astype(np.float32)
