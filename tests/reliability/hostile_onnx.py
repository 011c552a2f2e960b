"""Small hostile ONNX files for eval/bench: odd batch dimensions, unbounded loops, memory
bombs, slow graphs, names with control characters, a model ONNX Runtime warns about."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["classifier", "expand_bomb", "loop", "nested_if", "slow_matmuls", "save"]


def save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _const(name: str, value) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value), name)


def classifier(path: Path, batch, *, input_name: str = "x", input_type=TensorProto.FLOAT,
               unused_initializer: bool = False) -> Path:
    """(batch, 1, 12, 12) -> (batch, 10) logits: a reshape and a seeded matmul."""
    x = helper.make_tensor_value_info(input_name, input_type, [batch, 1, 12, 12])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])
    w = np.random.default_rng(0).standard_normal((144, 10)).astype(np.float32)
    inits = [_const("w", w), _const("s", np.array([-1, 144], np.int64))]
    if unused_initializer:
        inits.append(_const("unused", np.zeros(3, np.float32)))
    nodes = [helper.make_node("Cast", [input_name], ["xf"], to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["xf", "s"], ["f"]),
             helper.make_node("MatMul", ["f", "w"], ["logits"])]
    return save(helper.make_graph(nodes, "g", [x], [y], inits), path)


def loop(path: Path, trips: int = 2**62) -> Path:
    """A Loop of ``trips`` iterations that passes the input through."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 12, 12])
    body = helper.make_graph(
        [helper.make_node("Identity", ["c_in"], ["c_out"]),
         helper.make_node("Identity", ["v_in"], ["v_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, None)])
    node = helper.make_node("Loop", ["M", "c", "x"], ["y"], name="spin", body=body)
    inits = [_const("M", np.array(trips, np.int64)), _const("c", np.array(True))]
    return save(helper.make_graph([node], "g", [x], [y], inits), path)


def nested_if(path: Path) -> Path:
    """An If whose branches pass the input through (control flow without a loop)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 12, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 12, 12])
    out = helper.make_tensor_value_info("o", TensorProto.FLOAT, None)
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["o"])], "b", [], [out])
    node = helper.make_node("If", ["c"], ["y"], name="choose", then_branch=branch,
                            else_branch=branch)
    return save(helper.make_graph([node], "g", [x], [y], [_const("c", np.array(True))]), path)


def expand_bomb(path: Path, values: int = 2**29) -> Path:
    """Expands a (1, 1) input to (1, ``values``) float32 (2 GiB by default): the size comes
    from the input's shape at run time, so nothing is folded while loading."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, values])
    nodes = [helper.make_node("Shape", ["x"], ["sx"]),
             helper.make_node("Mul", ["sx", "k"], ["big"]),
             helper.make_node("Expand", ["x", "big"], ["y"])]
    inits = [_const("k", np.array([1, values], np.int64))]
    return save(helper.make_graph(nodes, "g", [x], [y], inits), path)


def slow_matmuls(path: Path, size: int = 1024, count: int = 40) -> Path:
    """A chain of ``count`` (size x size) matmuls on the expanded input: seconds of work
    from a few hundred bytes, with no loop."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [size, size])
    nodes = [helper.make_node("Expand", ["x", "shape"], ["m0"])]
    for i in range(count):
        nodes.append(helper.make_node("MatMul", [f"m{i}", "m0"], [f"m{i + 1}"]))
    nodes.append(helper.make_node("Identity", [f"m{count}"], ["y"]))
    inits = [_const("shape", np.array([size, size], np.int64))]
    return save(helper.make_graph(nodes, "g", [x], [y], inits), path)
