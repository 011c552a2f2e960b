"""Normalize a captured graph: one canonical node form per op, so later passes match one shape.

Canonical forms (leaf modules are never touched):

| op | canonical node |
|---|---|
| convolution | `call_module` of an exact `nn.Conv2d`, padding an int pair, padding_mode "zeros" |
| linear | `call_module` of an exact `nn.Linear` |
| batch norm | `call_module` of `nn.BatchNorm2d` / `nn.BatchNorm1d` (eval) |
| relu | `F.relu(x)` (from nn.ReLU, torch.relu, x.relu(), clamp(min=0), in-place forms) |
| relu6 | `F.relu6(x)` (from nn.ReLU6, hardtanh(0, 6), clamp(0, 6)) |
| other clamps | `torch.clamp(x, min=a, max=b)` (no integer form: unsupported) |
| add | `operator.add(a, b)` (from torch.add, x.add, x.add_, +=; alpha 1) |
| concat | `torch.cat([a, b, ...], dim)` with dim >= 0 |
| zero pad | `F.pad(x, pad, mode="constant", value=0.0)` (nn.ZeroPad2d, nn.ConstantPad2d) |
| max pool | `F.max_pool2d(x, kernel_size=, stride=, padding=, dilation=, ceil_mode=)` pairs |
| avg pool | `F.avg_pool2d(x, kernel_size=, stride=, padding=, ceil_mode=, count_include_pad=,` |
| | `divisor_override=)`, window parameters as pairs |
| global avg pool | `F.adaptive_avg_pool2d(x, 1)` (AdaptiveAvgPool2d(1), mean over H, W, ...) |
| flatten | `torch.flatten(x, 1)` (nn.Flatten, x.view(x.size(0), -1), x.reshape(N, -1), ...) |
| reshape | `torch.reshape(x, (-1, d1, ...))` for other batch-preserving reshapes |
| removed | dropout and stochastic depth (eval), nn.Identity, x.contiguous(), reshapes that |
| | keep the shape |

- Functional `F.conv2d` / `F.linear` with `get_attr` weights become modules named after the
  user's module that owned the weight; every call site owns its conv/linear/BN module.
- A symmetric zero pad feeding only a conv is merged into the conv's padding; an uneven one
  (TF "SAME" with stride 2) stays an explicit pad node.
- `torch._assert` checks (timm's `_assert(x.ndim == 4)`) are dropped, with the shape
  arithmetic they read.
- Elementwise functions of one tensor, products and the lossless index ops: see
  `intq.graph._functions` and `intq.graph._indexing`.
- In-place ops are made out-of-place; later readers of the overwritten tensor read the result.
- With an example input, `x.size(d)` / `x.shape[d]` for d != 0 become constants: the graph
  is specialized to the example's resolution, the batch dim stays dynamic.
See `intq.graph._elementwise`, `_pooling`, `_layers`, `_reshapes` for the rules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx

from intq.graph import _elementwise, _functions, _indexing, _layers, _pooling, _reshapes
from intq.graph._fx import (
    copy_graph_module,
    finish,
    has_new_nodes,
    is_leaf,
    mutates_input,
    propagate_shapes,
)

__all__ = ["normalize"]

_RULES = {**_elementwise.RULES, **_pooling.RULES, **_functions.RULES, **_indexing.RULES}
_TRACE_CHECKS = (torch._assert,)


def normalize(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` in canonical form (table above); numerically equal, idempotent."""
    gm = copy_graph_module(gm)
    _drop_trace_checks(gm)
    _make_out_of_place(gm)
    _layers.one_module_per_call(gm)
    for node in list(gm.graph.nodes):
        rule = _rule_for(gm, node)
        if rule is not None:
            rule(gm, node)
        else:
            _elementwise.eval_identity_rule(gm, node)
    _layers.functional_layers_to_modules(gm)
    _layers.resolve_conv_padding(gm)
    _layers.merge_pads_into_convs(gm)
    if has_new_nodes(gm):
        propagate_shapes(gm)
    _reshapes.canonical_reshapes(gm)
    _reshapes.fold_static_sizes(gm)
    return finish(gm)


def _drop_trace_checks(gm: fx.GraphModule) -> None:
    """Erase `torch._assert(cond, msg)` nodes: with static shapes their conditions (ndim,
    channel counts) held when the model was traced, and the capture check ran the model."""
    for node in list(gm.graph.nodes):
        if node.op == "call_function" and node.target in _TRACE_CHECKS and not node.users:
            gm.graph.erase_node(node)


def _rule_for(gm: fx.GraphModule, node: fx.Node) -> Callable | None:
    if node.op not in ("call_function", "call_method", "call_module") or is_leaf(gm, node):
        return None
    key = type(gm.get_submodule(node.target)) if node.op == "call_module" else node.target
    return _RULES.get((node.op, key))


def _make_out_of_place(gm: fx.GraphModule) -> None:
    """Readers of a tensor after an in-place op on it read that op's result instead."""
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for node in gm.graph.nodes:
        if is_leaf(gm, node) or not mutates_input(gm, node):
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node):
            continue
        for user in list(source.users):
            if order[user] > order[node]:
                user.replace_input_with(source, node)
