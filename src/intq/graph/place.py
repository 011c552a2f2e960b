"""Place quantizers on a fused float graph by rules (PAPER.md 3-4, DESIGN.md 4).

- every conv/linear (a fused node, BN folded) becomes a QuantConv2d/QuantLinear whose
  folded weights get a weight quantizer;
- an activation quantizer follows every op that produces a new integer tensor ("owners"):
  the model inputs, fused conv/linear/add outputs, average pools, and the outputs of float
  fallback regions (leaf modules, layers kept in float);
- except a float-output linear (``is_float_output_linear``): a QuantLinear without a fused
  activation whose value reaches the graph output directly or only through flatten/reshape
  (the classifier). It gets no output quantizer: deployment dequantizes its int32
  accumulator (bias included) straight to float32, y = float32(acc)·float32(S_in·S_w[c]),
  so the logits are not rounded to 8 bits (which ties close top-2 logits). The simulated
  module already computes that float output: linear(x_q, Q(W), bias on the int32 grid);
- lossless ops (max pool, flatten, reshape, pad, relu, relu6, concat, transpose, slice,
  nearest resize) get none: they reuse the quantizer of their source;
- a float node (an op without an integer form, a leaf module, a layer kept in float: the
  float islands of the integer program) gets a quantizer only when its value reaches an
  integer op; a float value read only by float nodes, the graph output or reshapes of those
  stays float (so the simulation computes what deployment computes). The same holds for a
  graph input read only by float nodes;
- concat inputs share one quantizer with the output: the owners feeding a concat are merged
  into one group with one quantizer, which observes all of them.
The quantizers of a graph are its submodules named ``act_q.<owner node>``.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import fx, nn

from intq.fakequant import Quantizer
from intq.graph._fx import copy_graph_module, finish, is_tensor
from intq.graph.fused import FusedConv2d, FusedLinear
from intq.graph.kinds import FLOAT_KINDS, OpKind, op_kind
from intq.graph.qmodules import QuantConv2d, QuantLinear
from intq.recipes import Recipe

__all__ = [
    "ACT_PREFIX",
    "LOSSLESS",
    "activation_quantizers",
    "float_output_layers",
    "is_float_node",
    "is_float_output_linear",
    "place_quantizers",
    "quant_layers",
    "source_node",
]

ACT_PREFIX = "act_q"
LOSSLESS = frozenset(
    {OpKind.MAX_POOL, OpKind.FLATTEN, OpKind.RESHAPE, OpKind.PAD, OpKind.RELU, OpKind.RELU6,
     OpKind.CAT, OpKind.TRANSPOSE, OpKind.SLICE, OpKind.RESIZE_NEAREST}
)
#: lossless ops that also run on float tensors (a float value may pass through them)
_FLOAT_PASSING = frozenset({OpKind.FLATTEN, OpKind.RESHAPE, OpKind.TRANSPOSE, OpKind.SLICE})
_NOT_TENSORS = frozenset({OpKind.OUTPUT, OpKind.SHAPE, OpKind.CONSTANT})
_RESHAPES = frozenset({OpKind.FLATTEN, OpKind.RESHAPE})


def place_quantizers(gm: fx.GraphModule, recipe: Recipe) -> fx.GraphModule:
    """A copy of the fused graph ``gm`` with weight and activation quantizers placed."""
    gm = copy_graph_module(gm)
    _quantize_layers(gm, recipe)
    if recipe.activation is not None:
        _insert_activation_quantizers(gm, recipe)
    return finish(gm, propagate=False)


def quant_layers(gm: fx.GraphModule) -> Iterator[tuple[str, QuantConv2d | QuantLinear]]:
    """``(qualified name, module)`` of every simulated-quantized conv/linear."""
    for name, module in gm.named_modules():
        if isinstance(module, QuantConv2d | QuantLinear):
            yield name, module


def activation_quantizers(gm: fx.GraphModule) -> Iterator[tuple[str, Quantizer]]:
    """``(owner node name, quantizer)`` of every activation quantizer."""
    if hasattr(gm, ACT_PREFIX):
        yield from getattr(gm, ACT_PREFIX).named_children()


def is_float_output_linear(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True when ``node`` calls a QuantLinear without a fused activation whose value reaches
    the graph output directly or only through flatten/reshape (see the module docstring);
    such a layer has no output quantizer and deploys as a float-output QLinear."""
    if node.op != "call_module":
        return False
    module = gm.get_submodule(node.target)
    return (isinstance(module, QuantLinear) and module.activation is None
            and _reaches_output_only_through_reshapes(gm, node))


def _reaches_output_only_through_reshapes(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Every reader of ``node``'s value is the output, or a flatten/reshape of it with the same
    property; shape queries (``x.size(0)``) read no values and are ignored."""
    readers = [u for u in node.users if op_kind(gm, u) != OpKind.SHAPE]
    return bool(readers) and all(
        u.op == "output" or (op_kind(gm, u) in _RESHAPES and u.args[0] is node
                             and _reaches_output_only_through_reshapes(gm, u))
        for u in readers)


def float_output_layers(gm: fx.GraphModule) -> Iterator[tuple[str, QuantLinear]]:
    """``(qualified name, module)`` of every float-output linear (``is_float_output_linear``)."""
    for node in gm.graph.nodes:
        if is_float_output_linear(gm, node):
            yield str(node.target), gm.get_submodule(node.target)


def source_node(gm: fx.GraphModule, node: fx.Node) -> fx.Node:
    """The node whose quantizer ``node``'s value carries: walk back through lossless ops
    (the first input of a concat stands for the whole group)."""
    while node.op != "placeholder" and op_kind(gm, node) in LOSSLESS:
        first = node.args[0]
        node = first[0] if isinstance(first, list | tuple) else first
    return node


def is_float_node(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True for a node computed in float in deployment: no integer form, a leaf module, or a
    conv/linear that the recipe keeps in float (a fused layer without weight quantizer)."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if isinstance(module, Quantizer | QuantConv2d | QuantLinear):
            return False
        if type(module) in (FusedConv2d, FusedLinear):
            return True
    return op_kind(gm, node) in FLOAT_KINDS


def _reaches_integer_op(gm: fx.GraphModule, node: fx.Node) -> bool:
    """True when some reader of ``node``'s value is an integer op (through float-passing
    reshapes); float nodes, the output and shape queries are not."""
    for user in node.users:
        kind = op_kind(gm, user)
        if user.op == "output" or kind == OpKind.SHAPE or is_float_node(gm, user):
            continue
        if kind in _FLOAT_PASSING and user.args[0] is node:
            if _reaches_integer_op(gm, user):
                return True
            continue
        return True
    return False


def _quantize_layers(gm: fx.GraphModule, recipe: Recipe) -> None:
    for node in gm.graph.nodes:
        if node.op != "call_module" or recipe.keeps_float(node.target):
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, FusedConv2d | FusedLinear):
            quant_cls = QuantConv2d if isinstance(module, FusedConv2d) else QuantLinear
            weight_q = Quantizer(recipe.weight_for(node.target))
            gm.add_submodule(node.target, quant_cls(module, weight_q))


def _owner_groups(gm: fx.GraphModule) -> dict[fx.Node, fx.Node]:
    """Map every owner node to its group root (union-find over concat inputs)."""
    parent: dict[fx.Node, fx.Node] = {}

    def root(n: fx.Node) -> fx.Node:
        while parent[n] is not n:
            parent[n] = parent[parent[n]]
            n = parent[n]
        return n

    for node in gm.graph.nodes:
        kind = op_kind(gm, node)
        if kind in _NOT_TENSORS or is_float_output_linear(gm, node) or not is_tensor(gm, node):
            continue
        floating = node.op == "placeholder" or is_float_node(gm, node)
        if floating and not _reaches_integer_op(gm, node):
            continue
        if node.op == "placeholder" or kind not in LOSSLESS:
            parent[node] = node
        elif kind == OpKind.CAT:
            roots = [root(source_node(gm, arg)) for arg in node.args[0]]
            for other in roots[1:]:
                parent[root(other)] = root(roots[0])
    return {node: root(node) for node in parent}


def _insert_activation_quantizers(gm: fx.GraphModule, recipe: Recipe) -> None:
    groups = _owner_groups(gm)
    container = nn.Module()
    gm.add_module(ACT_PREFIX, container)
    by_root: dict[fx.Node, str] = {}
    for owner, group_root in groups.items():
        if group_root not in by_root:
            spec = recipe.activation_for(str(group_root.target))
            container.add_module(group_root.name, Quantizer(spec))
            by_root[group_root] = f"{ACT_PREFIX}.{group_root.name}"
        _insert_after(gm, owner, by_root[group_root])
    _bind_input_quantizers(gm)


def _insert_after(gm: fx.GraphModule, owner: fx.Node, target: str) -> None:
    with gm.graph.inserting_after(owner):
        q_node = gm.graph.call_module(target, (owner,))
    owner.replace_all_uses_with(q_node, delete_user_cb=lambda user: user is not q_node)


def _bind_input_quantizers(gm: fx.GraphModule) -> None:
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, QuantConv2d | QuantLinear):
            module.bind_input_quantizer(_quantizer_of(gm, node.args[0]))


def _quantizer_of(gm: fx.GraphModule, node: fx.Node) -> Quantizer | None:
    """The activation quantizer whose output ``node`` carries (None if unquantized)."""
    src = source_node(gm, node)
    if src.op == "call_module" and str(src.target).startswith(f"{ACT_PREFIX}."):
        return gm.get_submodule(src.target)
    return None
