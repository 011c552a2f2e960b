"""float32 numpy semantics of FloatOp (the float fallback regions of an IntProgram).

Each formula is the ONNX operator the exporter writes (HardSigmoid/HardSwish with alpha = 1/6,
beta = 1/2). ONNX Runtime evaluates sigmoid, tanh and exp with its own polynomial
approximations, so results can differ in the last float32 bits; after the Quantize that
follows a float region that is at most 1 LSB, on values that fall next to a rounding boundary.
"""

import functools
from collections.abc import Callable

import numpy as np

from intq.convert.program import FloatOp, FloatSubgraph

__all__ = ["run_float_op", "run_float_subgraph"]

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


def run_float_subgraph(op: FloatSubgraph, args: list[np.ndarray]) -> np.ndarray:
    """Evaluate a float island in ONNX Runtime (1 thread): the same kernels, hence the same
    float32 values, as the island spliced into the exported model."""
    session = _island_session(op.model)
    feeds = {i.name: np.ascontiguousarray(a, np.float32)
             for i, a in zip(session.get_inputs(), args, strict=True)}
    try:
        out = session.run(None, feeds)[0]
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise ValueError(f"{op.label} ({op.source}): {str(exc).strip().splitlines()[0]}") from None
    return np.asarray(out, np.float32)


@functools.lru_cache(maxsize=256)
def _island_session(model: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
