"""The ONNX float form of a lookup table: DequantizeLinear -> f -> QuantizeLinear.

A QLookup is exact as a `Gather` of its 256-entry table, but ONNX Runtime gathers one byte
at a time (40x slower than the three vectorized passes of DequantizeLinear, a float op and
QuantizeLinear on a 96x56x56 tensor). So when f has an ONNX spelling (`FUNCTIONS`), the
converter computes the table by running exactly those three nodes in ONNX Runtime on the 256
input codes (`table_from_onnx_runtime`), and the writer emits the same three nodes: ONNX
Runtime's elementwise kernels treat every element alike, so the model computes the table.
Functions without a spelling keep their torch-computed table and the Gather form.

A function is named as the graph computes it: "hardswish", "sigmoid", "leaky_relu" with
params (slope,), "gelu" with ("none",) or ("tanh",), "add" / "mul" / "sub" / "truediv" with
(constant, tensor side 0 or 1), "clamp" with (low, high) (None for no bound), ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from intq.convert.program import QTensor

__all__ = ["FUNCTIONS", "float_nodes", "table_from_onnx_runtime"]

OPSET = 21
_INT8_OFFSET = 128


def _unary(op_type: str, **attrs) -> Callable:
    return lambda helper, x, y, params, const: [helper.make_node(op_type, [x], [y], **attrs)]


def _with_param(op_type: str, attr: str) -> Callable:
    return lambda helper, x, y, params, const: [
        helper.make_node(op_type, [x], [y], **{attr: float(params[0])})]


def _silu(helper, x, y, params, const):
    return [helper.make_node("Sigmoid", [x], [f"{y}/sigmoid"]),
            helper.make_node("Mul", [x, f"{y}/sigmoid"], [y])]


def _gelu(helper, x, y, params, const):
    return [helper.make_node("Gelu", [x], [y], approximate=str(params[0]))]


def _softplus(helper, x, y, params, const):
    if tuple(params) != (1.0, 20.0):
        raise KeyError("softplus with beta != 1 or another threshold")
    return [helper.make_node("Softplus", [x], [y])]


def _clamp(helper, x, y, params, const):
    bounds = [const(f"{y}/{name}", np.float32(v)) if v is not None else ""
              for name, v in zip(("min", "max"), params, strict=True)]
    return [helper.make_node("Clip", [x, *bounds], [y])]


def _arithmetic(op_type: str) -> Callable:
    def nodes(helper, x, y, params, const):
        c = const(f"{y}/constant", np.float32(params[0]))
        inputs = [x, c] if params[1] == 0 else [c, x]
        return [helper.make_node(op_type, inputs, [y])]
    return nodes


#: function name -> builder(onnx.helper, x, y, params, const) of its float nodes
FUNCTIONS: dict[str, Callable] = {
    "hardswish": _unary("HardSwish"),
    "hardsigmoid": _unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5),
    "sigmoid": _unary("Sigmoid"),
    "tanh": _unary("Tanh"),
    "silu": _silu,
    "mish": _unary("Mish"),
    "gelu": _gelu,
    "leaky_relu": _with_param("LeakyRelu", "alpha"),
    "elu": _with_param("Elu", "alpha"),
    "softplus": _softplus,
    "clamp": _clamp,
    "add": _arithmetic("Add"),
    "sub": _arithmetic("Sub"),
    "mul": _arithmetic("Mul"),
    "truediv": _arithmetic("Div"),
}


def float_nodes(function: str, params: tuple, x: str, y: str, qx: QTensor, qy: QTensor,
                const) -> list | None:
    """DequantizeLinear(x) -> f -> QuantizeLinear -> y on uint8 tensors (int8 ones are
    stored as q + 128), or None when f has no ONNX spelling. `const(name, value)` adds an
    initializer and returns its name."""
    from onnx import helper

    build = FUNCTIONS.get(function)
    if build is None:
        return None
    try:
        body = build(helper, f"{y}/real", f"{y}/f", params, const)
    except KeyError:
        return None
    qparams = [[const(f"{n}/scale", np.float32(t.scale)),
                const(f"{n}/zero_point", np.uint8(t.zero_point + _offset(t)))]
               for n, t in ((x, qx), (y, qy))]
    return [helper.make_node("DequantizeLinear", [x, *qparams[0]], [f"{y}/real"]), *body,
            helper.make_node("QuantizeLinear", [f"{y}/f", *qparams[1]], [y])]


def table_from_onnx_runtime(function: str, params: tuple, qx: QTensor,
                            qy: QTensor) -> np.ndarray | None:
    """The 256-entry table (in qy's integers, clamped to [qmin, qmax]) that `float_nodes`
    computes in ONNX Runtime, or None when f has no ONNX spelling."""
    model = _model(function, tuple(params), qx, qy)
    if model is None:
        return None
    session = _session(model)
    codes = np.arange(256, dtype=np.uint8)  # uint8 codes, i.e. q + offset
    out = session.run(None, {"x": codes})[0].astype(np.int32) - _offset(qy)
    return np.clip(out, qy.qmin, qy.qmax)


@functools.lru_cache(maxsize=512)
def _model(function: str, params: tuple, qx: QTensor, qy: QTensor) -> bytes | None:
    import onnx
    from onnx import helper, numpy_helper

    initializers = []

    def const(name, value):
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    nodes = float_nodes(function, params, "x", "y", qx, qy, const)
    if nodes is None:
        return None
    uint8 = onnx.TensorProto.UINT8
    graph = helper.make_graph(nodes, "lookup", [helper.make_tensor_value_info("x", uint8, [256])],
                              [helper.make_tensor_value_info("y", uint8, [256])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              ir_version=10)
    return model.SerializeToString()


def _session(model: bytes):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _offset(qt: QTensor) -> int:
    return _INT8_OFFSET if qt.dtype == "int8" else 0
