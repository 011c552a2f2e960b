"""torch.fx plumbing shared by the graph passes: copies, shapes, module lookup, clean-up.

A captured GraphModule carries two entries in `gm.meta`:
- `EXAMPLE_INPUTS`: the example input tensors (None when captured without one); every pass
  re-runs shape propagation with them, so `node.meta["tensor_meta"]` is always current;
- `LEAF_MODULES`: qualified names of the modules kept as opaque float calls.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

__all__ = [
    "EXAMPLE_INPUTS",
    "LEAF_MODULES",
    "bind",
    "calls_module",
    "copy_graph_module",
    "finish",
    "has_new_nodes",
    "is_leaf",
    "is_tensor",
    "mutates_input",
    "propagate_shapes",
    "remove",
    "replace_with_constant",
    "rewrite",
    "shape_of",
    "unique_name",
]

EXAMPLE_INPUTS = "intq_example_inputs"
LEAF_MODULES = "intq_leaf_modules"
_SHAPE_METHODS = frozenset({"size", "dim", "numel"})
_SHAPE_ATTRS = frozenset({"shape", "ndim", "dtype", "device"})
_SHAPE_ARITHMETIC = frozenset(
    {operator.getitem, operator.add, operator.sub, operator.mul, operator.floordiv}
)
_INPLACE_OPERATORS = frozenset({operator.iadd, operator.isub, operator.imul, operator.itruediv})
_INPLACE_POSITION = {
    **{f: 1 for f in (F.relu, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.mish, F.selu)},
    **{f: 2 for f in (F.leaky_relu, F.elu, F.celu)},
    **{f: 3 for f in (F.hardtanh, F.threshold, F.dropout, F.dropout1d, F.dropout2d)},
    **{f: 3 for f in (F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout)},
}


def copy_graph_module(gm: fx.GraphModule) -> fx.GraphModule:
    """A deep copy of `gm` (modules, parameters, graph and meta): passes never edit their input."""
    if not isinstance(gm, fx.GraphModule):
        raise ValueError(
            f"expected a torch.fx.GraphModule from intq.graph.capture, got {type(gm).__name__}"
        )
    return copy.deepcopy(gm)


def is_leaf(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for a call of a module the user kept as an opaque float leaf."""
    return node.op == "call_module" and node.target in gm.meta.get(LEAF_MODULES, ())


def calls_module(gm: fx.GraphModule, node: fx.Node, types: type | tuple[type, ...]) -> bool:
    """True when `node` calls a (non-leaf) module whose exact type is one of `types`."""
    if node.op != "call_module" or is_leaf(gm, node):
        return False
    wanted = types if isinstance(types, tuple) else (types,)
    return type(gm.get_submodule(node.target)) in wanted


def shape_of(node: Any) -> tuple[int, ...] | None:
    """Shape of a tensor-valued node for the example input, or None when unknown."""
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def is_tensor(gm: fx.GraphModule, node: Any) -> bool:
    """True when `node` produces a tensor (not a shape, an int or a constant literal)."""
    if not isinstance(node, fx.Node):
        return False
    if gm.meta.get(EXAMPLE_INPUTS) is not None and node.op != "output":
        return isinstance(node.meta.get("tensor_meta"), TensorMetadata)
    return not _is_shape_value(node)


def _is_shape_value(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target in _SHAPE_METHODS:
        return True
    if node.op == "call_function" and node.target is getattr:
        return node.args[1] in _SHAPE_ATTRS
    if node.op == "call_function" and node.target in _SHAPE_ARITHMETIC:
        inputs = [a for a in node.args if isinstance(a, fx.Node)]
        return bool(inputs) and all(_is_shape_value(a) for a in inputs)
    return False


def bind(node: fx.Node, names: Sequence[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """The node's arguments by parameter name, defaults filled in (`names[0]` is the input)."""
    bound = dict(defaults)
    bound.update(zip(names, node.args, strict=False))
    bound.update(node.kwargs)
    return bound


def unique_name(gm: fx.GraphModule, base: str) -> str:
    """`base`, or `base_1`, `base_2`, ... : the first dotted path not yet an attribute of `gm`."""
    name, k = base, 0
    while _has_path(gm, name):
        k += 1
        name = f"{base}_{k}"
    return name


def _has_path(root: nn.Module, path: str) -> bool:
    obj: Any = root
    for part in path.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def mutates_input(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for an op that overwrites its first argument: x.relu_(), F.relu(x, inplace=True),
    nn.ReLU(inplace=True), torch.relu_, operator.iadd, ..."""
    if node.op == "call_module":
        return bool(getattr(gm.get_submodule(node.target), "inplace", False))
    if node.op == "call_method":
        return node.target.endswith("_") and not node.target.startswith("_")
    if node.op != "call_function":
        return False
    name = getattr(node.target, "__name__", "")
    if node.target in _INPLACE_OPERATORS or (name.endswith("_") and not name.startswith("_")):
        return True
    position = _INPLACE_POSITION.get(node.target)
    if position is None:
        return False
    flag = node.args[position] if len(node.args) > position else False
    return bool(node.kwargs.get("inplace", flag))


def _keep_when_unused(gm: fx.GraphModule, node: fx.Node) -> bool:
    return node.is_impure() or is_leaf(gm, node) or mutates_input(gm, node)


def finish(gm: fx.GraphModule, *, propagate: bool = True) -> fx.GraphModule:
    """Drop dead nodes and unreferenced modules/parameters, recompile, eval(), refresh shapes.

    Unused nodes that mutate their input or call a leaf module are kept.
    """
    gm.graph.eliminate_dead_code(lambda node: _keep_when_unused(gm, node))
    gm.graph.lint()
    graph = fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    graph._codegen = copy.deepcopy(gm.graph._codegen)
    out = fx.GraphModule(gm, graph, type(gm).__name__)
    out.meta.update(gm.meta)
    out.eval()
    if propagate:
        propagate_shapes(out)
    return out


def rewrite(node: fx.Node, target: Any, args: tuple, kwargs: dict | None = None) -> None:
    """Turn `node` in place into `call_function target(*args, **kwargs)` (name kept)."""
    node.op = "call_function"
    node.target = target
    node.args = tuple(args)
    node.kwargs = dict(kwargs or {})


def remove(node: fx.Node, replacement: fx.Node) -> None:
    """Erase `node`, its users reading `replacement` instead."""
    node.replace_all_uses_with(replacement)
    node.graph.erase_node(node)


def replace_with_constant(node: fx.Node, value: Any) -> None:
    """Erase `node` (an int/shape value), its users reading the literal `value` instead."""
    for user in list(node.users):
        user.args = fx.node.map_arg(user.args, lambda n: value if n is node else n)
        user.kwargs = fx.node.map_arg(user.kwargs, lambda n: value if n is node else n)
    node.graph.erase_node(node)


def propagate_shapes(gm: fx.GraphModule) -> Any:
    """Refresh `node.meta["tensor_meta"]` by running the example input; returns the output.

    Without an example input nothing runs and None is returned.
    """
    inputs = gm.meta.get(EXAMPLE_INPUTS)
    if inputs is None:
        return None
    with torch.no_grad():
        return ShapeProp(gm).propagate(*inputs)


def has_new_nodes(gm: fx.GraphModule) -> bool:
    """True when some node was created after the last shape propagation."""
    return gm.meta.get(EXAMPLE_INPUTS) is not None and any(
        "type" not in node.meta for node in gm.graph.nodes if node.op != "output"
    )
