"""Op kinds of a normalized graph: what each node is, and which nodes have no integer form.

`op_kind` recognizes exactly the canonical forms that `normalize` produces (listed in
`intq.graph.normalize`) and the fused modules of `intq.graph.fused`; anything else is
`UNSUPPORTED`. Leaf modules (kept in float on purpose) are `LEAF`, not unsupported.
"""

from __future__ import annotations

import enum
import operator
from collections import Counter

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.node import _get_qualified_name

from intq.graph._functions import LOOKUP_FUNCTIONS, SCALAR_OPERATORS
from intq.graph._fx import calls_module, is_leaf, is_tensor, shape_of
from intq.graph._indexing import resize_factors, slice_of
from intq.graph.fused import FusedAdd, FusedConv2d, FusedLinear

__all__ = ["FLOAT_KINDS", "OpKind", "float_reason", "graph_summary", "is_constant_expression",
           "op_kind", "unsupported_nodes"]


class OpKind(enum.StrEnum):
    """What a node computes, in integer-inference terms."""

    INPUT = "input"
    OUTPUT = "output"
    CONSTANT = "constant"
    CONV = "conv"
    LINEAR = "linear"
    BATCHNORM = "batchnorm"
    FUSED_CONV = "fused_conv"
    FUSED_LINEAR = "fused_linear"
    FUSED_ADD = "fused_add"
    ADD = "add"
    RELU = "relu"
    RELU6 = "relu6"
    CAT = "cat"
    MAX_POOL = "max_pool"
    AVG_POOL = "avg_pool"
    GLOBAL_AVG_POOL = "global_avg_pool"
    FLATTEN = "flatten"
    RESHAPE = "reshape"
    PAD = "pad"
    LOOKUP = "lookup"
    MUL = "mul"
    TRANSPOSE = "transpose"
    SLICE = "slice"
    RESIZE_NEAREST = "resize_nearest"
    SHAPE = "shape"
    LEAF = "leaf"
    UNSUPPORTED = "unsupported"


_NO_INTEGER_FORM = (OpKind.BATCHNORM, OpKind.UNSUPPORTED)
#: kinds computed in float (float islands in the integer program)
FLOAT_KINDS = frozenset({OpKind.BATCHNORM, OpKind.UNSUPPORTED, OpKind.LEAF})
_SHAPE_METHODS = frozenset({"size", "dim", "numel"})
_MODULE_KINDS = {
    FusedConv2d: OpKind.FUSED_CONV,
    FusedLinear: OpKind.FUSED_LINEAR,
    FusedAdd: OpKind.FUSED_ADD,
    nn.Linear: OpKind.LINEAR,
    nn.BatchNorm1d: OpKind.BATCHNORM,
    nn.BatchNorm2d: OpKind.BATCHNORM,
}


def op_kind(gm: fx.GraphModule, node: fx.Node) -> OpKind:
    """The kind of `node` in the normalized graph `gm` (UNSUPPORTED if not canonical)."""
    if node.op in ("placeholder", "output", "get_attr"):
        return {"placeholder": OpKind.INPUT, "output": OpKind.OUTPUT}.get(node.op, OpKind.CONSTANT)
    if is_constant_expression(node):
        return OpKind.CONSTANT
    if node.op == "call_module":
        return _module_kind(gm, node)
    if node.op == "call_method":
        return OpKind.SHAPE if node.target in _SHAPE_METHODS else OpKind.UNSUPPORTED
    return _function_kind(gm, node)


def is_constant_expression(node: fx.Node, depth: int = 8) -> bool:
    """True for a parameter (get_attr) or a function of parameters only, e.g. timm's
    `gamma.reshape(1, -1, 1, 1)` (looked at up to `depth` ops deep): a constant, computed
    inside the float island or integer op that reads it."""
    if node.op == "get_attr":
        return True
    if node.op not in ("call_function", "call_method") or depth == 0:
        return False
    inputs = node.all_input_nodes
    return bool(inputs) and all(is_constant_expression(n, depth - 1) for n in inputs)


def _module_kind(gm: fx.GraphModule, node: fx.Node) -> OpKind:
    if is_leaf(gm, node):
        return OpKind.LEAF
    if calls_module(gm, node, nn.Conv2d):
        canonical = _is_canonical_conv(gm.get_submodule(node.target))
        return OpKind.CONV if canonical else OpKind.UNSUPPORTED
    if calls_module(gm, node, nn.Linear) and len(shape_of(node) or (0, 0)) != 2:
        return OpKind.UNSUPPORTED  # a linear over the last axis of an (N, ..., C) tensor
    return _MODULE_KINDS.get(type(gm.get_submodule(node.target)), OpKind.UNSUPPORTED)


def _is_canonical_conv(conv: nn.Conv2d) -> bool:
    return conv.padding_mode == "zeros" and all(isinstance(p, int) for p in conv.padding)


def _function_kind(gm: fx.GraphModule, node: fx.Node) -> OpKind:
    target, args, kwargs = node.target, node.args, node.kwargs
    inputs = node.all_input_nodes
    if target is operator.getitem and inputs and op_kind(gm, inputs[0]) == OpKind.LEAF:
        return OpKind.LEAF  # one output of a float leaf returning a tuple
    if target is getattr and args[1] == "shape":
        return OpKind.SHAPE
    shape_inputs = inputs and all(op_kind(gm, n) == OpKind.SHAPE for n in inputs)
    if shape_inputs and not is_tensor(gm, node):
        return OpKind.SHAPE  # x.size(2) // 2, x.shape[1:]
    if target in (F.relu, F.relu6) and len(args) == 1 and not kwargs:
        return OpKind.RELU if target is F.relu else OpKind.RELU6
    if target is operator.add and len(args) == 2 and all(_is_activation(gm, a) for a in args):
        return OpKind.ADD
    if target is torch.cat and len(args) == 2 and isinstance(args[0], list):
        return OpKind.CAT
    if target is F.pad and len(args) == 2 and kwargs == {"mode": "constant", "value": 0.0}:
        return OpKind.PAD
    if target is torch.flatten and args[1:] == (1,) and not kwargs:
        return OpKind.FLATTEN
    if target is torch.reshape:
        return OpKind.RESHAPE
    return _function_kind_more(gm, node)


def _function_kind_more(gm: fx.GraphModule, node: fx.Node) -> OpKind:
    target, args = node.target, node.args
    tensors = [a for a in node.all_input_nodes if _is_activation(gm, a)]
    if target in LOOKUP_FUNCTIONS and tensors == [args[0]] and len(node.all_input_nodes) == 1:
        return OpKind.LOOKUP
    if target in SCALAR_OPERATORS and len(args) == 2 and not node.kwargs:
        if len(tensors) == 1 and len(node.all_input_nodes) == 1 and any(
                isinstance(a, int | float) and not isinstance(a, bool) for a in args):
            return OpKind.LOOKUP
        if target is operator.mul and len(tensors) == 2 and _is_activation(gm, args[0]) and \
                _is_activation(gm, args[1]):
            return OpKind.MUL
    if target is torch.permute and len(args) == 2 and args[1][:1] == (0,):
        return OpKind.TRANSPOSE
    if slice_of(node) is not None:
        return OpKind.SLICE
    if resize_factors(node) is not None:
        return OpKind.RESIZE_NEAREST
    return _pool_kind(node)


def _is_activation(gm: fx.GraphModule, arg: object) -> bool:
    return isinstance(arg, fx.Node) and not is_constant_expression(arg) and is_tensor(gm, arg)


def _pool_kind(node: fx.Node) -> OpKind:
    spelled_out = len(node.args) == 1 and "kernel_size" in node.kwargs
    if node.target is F.max_pool2d and spelled_out:
        return OpKind.MAX_POOL
    if node.target is F.avg_pool2d and spelled_out and node.kwargs["divisor_override"] is None:
        floor_counting_padding = not node.kwargs["ceil_mode"] and node.kwargs[
            "count_include_pad"]
        return OpKind.AVG_POOL if floor_counting_padding else OpKind.UNSUPPORTED
    if node.target is F.adaptive_avg_pool2d and node.args[1:] == (1,):
        return OpKind.GLOBAL_AVG_POOL
    return OpKind.UNSUPPORTED


def unsupported_nodes(gm: fx.GraphModule) -> list[str]:
    """`"<node name>: <target>"` for every node without an integer implementation.

    These are ops outside the canonical set (sigmoid, mul, softmax, ...) and batch norms
    that could not be folded. Float leaf modules are not listed (they are float on purpose).
    """
    return [
        f"{node.name}: {_describe(gm, node)}"
        for node in gm.graph.nodes
        if op_kind(gm, node) in _NO_INTEGER_FORM
    ]


def _describe(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        unfolded = isinstance(module, nn.modules.batchnorm._BatchNorm)
        note = " (not folded into a conv/linear)" if unfolded else ""
        return f"{type(module).__name__} module {node.target!r}{note}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return _get_qualified_name(node.target).removeprefix("_")


def float_reason(gm: fx.GraphModule, node: fx.Node) -> str:
    """Why `node` (of a kind in FLOAT_KINDS) stays float, in a few words."""
    kind = op_kind(gm, node)
    if kind == OpKind.LEAF:
        return "kept in float (leaf module, --keep-float)"
    if kind == OpKind.BATCHNORM:
        return "batch norm that could not be folded or made a conv"
    return f"no integer form for {_describe(gm, node)}"


def graph_summary(gm: fx.GraphModule) -> dict[str, int]:
    """Node counts by op kind, plus `"<fused kind>+<activation>"` counts for fused nodes."""
    counts: Counter[str] = Counter()
    for node in gm.graph.nodes:
        kind = op_kind(gm, node)
        counts[str(kind)] += 1
        if kind in (OpKind.FUSED_CONV, OpKind.FUSED_LINEAR, OpKind.FUSED_ADD):
            activation = gm.get_submodule(node.target).activation
            if activation is not None:
                counts[f"{kind}+{activation}"] += 1
    return dict(sorted(counts.items()))
