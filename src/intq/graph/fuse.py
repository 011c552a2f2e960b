"""Fuse conv/linear/add with the BN and ReLU/ReLU6 that follow into single fused nodes.

Runs on a normalized graph. Afterwards:
- every conv node calls a `FusedConv2d` at the conv's own qualified name (the conv moves to
  `<name>.conv`); every linear node calls a `FusedLinear` (`<name>.linear`);
- every add of two activation tensors calls a `FusedAdd` named after the add node;
- a BN right after a conv/linear (when not folded before) moves into the fused module, and
  a relu/relu6 right after a fused node becomes its `activation` (relu then relu6 = relu6),
  but only when the fused node's output has no other reader: a ReLU whose input is also
  read elsewhere stays a separate node.
So the output of a fused node is the only place for an activation quantizer (PAPER.md 3).
"""

from __future__ import annotations

from torch import fx, nn

from intq.graph._fx import calls_module, copy_graph_module, finish, remove, shape_of, unique_name
from intq.graph.fused import FusedAdd, FusedConv2d, FusedLinear, compose_activations
from intq.graph.kinds import OpKind, op_kind

__all__ = ["fuse"]

_FUSED = (FusedConv2d, FusedLinear, FusedAdd)
_ACTIVATIONS = {OpKind.RELU: "relu", OpKind.RELU6: "relu6"}


def fuse(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` with conv/linear/add (+BN) (+relu/relu6) as fused nodes; idempotent."""
    gm = copy_graph_module(gm)
    for node in list(gm.graph.nodes):
        kind = op_kind(gm, node)
        if kind in (OpKind.CONV, OpKind.LINEAR):
            _wrap_layer(gm, node, kind)
        elif kind == OpKind.ADD:
            _wrap_add(gm, node)
    for node in list(gm.graph.nodes):
        if calls_module(gm, node, _FUSED):
            _absorb_followers(gm, node)
    return finish(gm)


def _wrap_layer(gm: fx.GraphModule, node: fx.Node, kind: OpKind) -> None:
    layer = gm.get_submodule(node.target)
    fused = FusedConv2d(layer) if kind == OpKind.CONV else FusedLinear(layer)
    gm.add_submodule(node.target, fused)


def _wrap_add(gm: fx.GraphModule, node: fx.Node) -> None:
    name = unique_name(gm, node.name)
    gm.add_submodule(name, FusedAdd(None))
    node.op, node.target = "call_module", name


def _absorb_followers(gm: fx.GraphModule, node: fx.Node) -> None:
    """Pull the single reader of `node` into it while it is a matching BN or relu/relu6."""
    fused = gm.get_submodule(node.target)
    while len(node.users) == 1:
        user = next(iter(node.users))
        kind = op_kind(gm, user)
        if kind in _ACTIVATIONS:
            fused.activation = compose_activations(fused.activation, _ACTIVATIONS[kind])
        elif kind == OpKind.BATCHNORM and _takes_bn(fused, gm.get_submodule(user.target), node):
            fused.bn = gm.get_submodule(user.target)
        else:
            return
        remove(user, node)


def _takes_bn(fused: nn.Module, bn: nn.Module, node: fx.Node) -> bool:
    """True when `bn` directly follows the layer of `fused` and normalizes its channels."""
    if isinstance(fused, FusedAdd) or fused.bn is not None or fused.activation is not None:
        return False
    if isinstance(fused, FusedConv2d):
        return isinstance(bn, nn.BatchNorm2d) and bn.num_features == fused.conv.out_channels
    rank = len(shape_of(node) or (0, 0))
    features = fused.linear.out_features
    return isinstance(bn, nn.BatchNorm1d) and rank == 2 and bn.num_features == features
