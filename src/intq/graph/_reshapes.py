"""Canonical forms of reshapes (flatten/view/reshape/squeeze/unsqueeze) and static sizes.

With shapes from the example input, dim 0 is the batch and stays dynamic; all other dims
are static for the example input's resolution:
- same shape in and out -> removed;
- (N, ...) -> (N, prod(...)) -> `torch.flatten(x, 1)`;
- other batch-preserving reshapes -> `torch.reshape(x, (-1, d1, d2, ...))`;
- a reshape that mixes the batch into other dims -> `torch.reshape(x, <example shape>)`.
Without shapes only the spelled-out patterns are recognized (`flatten(x, 1)`, `nn.Flatten()`,
`x.view(x.size(0), -1)`), other views become `torch.reshape(x, shape)`.
`x.size(d)` / `x.shape[d]` with d != 0 are replaced by their value; the batch size stays.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn

from intq.graph._fx import bind, calls_module, remove, replace_with_constant, rewrite, shape_of

__all__ = ["canonical_reshapes", "fold_static_sizes"]

_METHODS = frozenset({"view", "reshape", "flatten", "squeeze", "unsqueeze"})
_FUNCTIONS = (torch.reshape, torch.flatten, torch.squeeze, torch.unsqueeze)
_FLATTEN = (("input", "start_dim", "end_dim"), {"start_dim": 0, "end_dim": -1})


def canonical_reshapes(gm: fx.GraphModule) -> None:
    """Rewrite every reshape-like node into flatten(x, 1) / reshape(x, shape), or drop it."""
    for node in list(gm.graph.nodes):
        if _is_reshape(gm, node):
            x, shape_out = node.args[0], shape_of(node)
            shape_in = shape_of(x)
            if shape_in is not None and shape_out is not None:
                _by_shapes(node, x, shape_in, shape_out)
            else:
                _by_syntax(gm, node, x)


def _is_reshape(gm: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_method":
        return node.target in _METHODS
    if node.op == "call_function":
        return node.target in _FUNCTIONS
    return calls_module(gm, node, nn.Flatten)


def _by_shapes(node: fx.Node, x: fx.Node, shape_in: tuple, shape_out: tuple) -> None:
    if shape_out == shape_in:
        remove(node, x)
    elif not shape_out or not shape_in or shape_out[0] != shape_in[0]:
        rewrite(node, torch.reshape, (x, shape_out))
    elif len(shape_out) == 2 and len(shape_in) > 2:
        rewrite(node, torch.flatten, (x, 1))
    else:
        rewrite(node, torch.reshape, (x, (-1, *shape_out[1:])))


def _by_syntax(gm: fx.GraphModule, node: fx.Node, x: fx.Node) -> None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        span = (module.start_dim, module.end_dim)
    elif node.target in ("flatten", torch.flatten):
        a = bind(node, *_FLATTEN)
        span = (a["start_dim"], a["end_dim"])
    elif node.target in ("view", "reshape", torch.reshape):
        _view_by_syntax(node, x)
        return
    else:
        return
    if span == (1, -1):
        rewrite(node, torch.flatten, (x, 1))


def _view_by_syntax(node: fx.Node, x: fx.Node) -> None:
    shape = node.args[1:] if node.op == "call_method" else node.args[1]
    if len(shape) == 1 and isinstance(shape[0], tuple | list):
        shape = shape[0]
    if len(shape) == 2 and shape[1] == -1 and _is_batch_size(shape[0]):
        rewrite(node, torch.flatten, (x, 1))
    else:
        rewrite(node, torch.reshape, (x, tuple(shape)))


def _is_batch_size(value: Any) -> bool:
    """True for `t.size(0)`, `t.shape[0]` or `t.size()[0]`."""
    if not isinstance(value, fx.Node):
        return False
    if value.op == "call_method" and value.target == "size":
        return bind(value, ("input", "dim"), {"dim": None})["dim"] == 0
    if value.op == "call_function" and value.target is operator.getitem and value.args[1] == 0:
        source = value.args[0]
        return isinstance(source, fx.Node) and _is_shape_of_tensor(source)
    return False


def _is_shape_of_tensor(node: fx.Node) -> bool:
    if node.op == "call_method" and node.target == "size":
        return len(node.args) == 1 and not node.kwargs
    return node.op == "call_function" and node.target is getattr and node.args[1] == "shape"


def fold_static_sizes(gm: fx.GraphModule) -> None:
    """Replace `x.size(d)`, `x.shape[d]`, `x.size()[d]` (d != 0, slices without 0) by values."""
    for node in list(gm.graph.nodes):
        if node.op == "call_method" and node.target == "size":
            a = bind(node, ("input", "dim"), {"dim": None})
            shape = shape_of(a["input"])
            if shape is None:
                continue
            if a["dim"] is None:
                _fold_indexing(node, shape)
            elif isinstance(a["dim"], int) and a["dim"] % len(shape) != 0:
                replace_with_constant(node, shape[a["dim"]])
        elif _is_shape_of_tensor(node) and shape_of(node.args[0]) is not None:
            _fold_indexing(node, shape_of(node.args[0]))


def _fold_indexing(node: fx.Node, shape: tuple[int, ...]) -> None:
    for user in list(node.users):
        if user.op == "call_function" and user.target is operator.getitem:
            value = _static_part(shape, user.args[1])
            if value is not None:
                replace_with_constant(user, value)


def _static_part(shape: tuple[int, ...], index: Any) -> Any:
    if isinstance(index, int):
        return None if index % len(shape) == 0 else shape[index]
    if isinstance(index, slice):
        picked = range(len(shape))[index]
        return None if 0 in picked else tuple(shape[i] for i in picked)
    return None
