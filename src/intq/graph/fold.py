"""Fold inference batch norm into the conv/linear before it (PAPER.md 3).

With `σ = sqrt(running_var + eps)`, per output channel c:

    W_inf[c] = γ[c]·W[c] / σ[c]          b_inf[c] = β[c] + γ[c]·(b[c] - μ[c]) / σ[c]

(`b` = 0 for a layer without bias). Computed in float64, stored in the layer's dtype. A BN
is folded only when the layer output has no other reader; a BN that cannot be folded (no
conv/linear right before it, a shared output: DenseNet's pre-activation BN, a BN after a
concat or an add) becomes a depthwise 1x1 conv, W[c] = γ[c]/σ[c], b[c] = β[c] - μ[c]·γ[c]/σ[c]
(per-channel weights give it an exact integer form); a BN without running statistics stays
and runs in float.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from intq.graph._fx import calls_module, copy_graph_module, finish, remove, shape_of
from intq.graph.fused import FusedConv2d, FusedLinear

__all__ = ["fold_batchnorm", "folded_parameters"]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def fold_batchnorm(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of `gm` with every foldable BN folded into its conv/linear; idempotent."""
    gm = copy_graph_module(gm)
    for node in list(gm.graph.nodes):
        if calls_module(gm, node, (FusedConv2d, FusedLinear)):
            _fold_inside(gm.get_submodule(node.target))
        elif calls_module(gm, node, _BATCHNORMS):
            _fold_after(gm, node)
    for node in list(gm.graph.nodes):
        if calls_module(gm, node, nn.BatchNorm2d) and _can_fold(gm.get_submodule(node.target)):
            gm.add_submodule(node.target, _as_depthwise_conv(gm.get_submodule(node.target)))
    return finish(gm)


def _as_depthwise_conv(bn: nn.BatchNorm2d) -> nn.Conv2d:
    """The 1x1 depthwise conv computing `bn` in eval mode (see the module docstring)."""
    c = bn.num_features
    conv = nn.Conv2d(c, c, 1, groups=c, bias=True).to(bn.running_mean.dtype)
    weight, bias = folded_parameters(torch.ones(c, 1, 1, 1, dtype=conv.weight.dtype), None, bn)
    conv.weight = nn.Parameter(weight, requires_grad=False)
    conv.bias = nn.Parameter(bias, requires_grad=False)
    return conv.eval()


def folded_parameters(
    weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.modules.batchnorm._BatchNorm
) -> tuple[torch.Tensor, torch.Tensor]:
    """(W_inf, b_inf) = (γW/σ, β + γ(b - μ)/σ), σ = sqrt(var + eps), per output channel."""
    sigma = torch.sqrt(bn.running_var.double() + bn.eps)
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(sigma)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(sigma)
    b = bias.double() if bias is not None else torch.zeros_like(sigma)
    scale = gamma / sigma
    w_inf = weight.double() * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    b_inf = beta + (b - bn.running_mean.double()) * scale
    return w_inf.to(weight.dtype), b_inf.to(weight.dtype)


def _can_fold(bn: nn.Module) -> bool:
    return bn.track_running_stats and bn.running_mean is not None and bn.running_var is not None


def _fold_into(layer: nn.Conv2d | nn.Linear, bn: nn.Module) -> None:
    weight, bias = folded_parameters(layer.weight.detach(), _detached(layer.bias), bn)
    layer.weight = nn.Parameter(weight, requires_grad=layer.weight.requires_grad)
    layer.bias = nn.Parameter(bias, requires_grad=layer.weight.requires_grad)


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


def _fold_inside(fused: FusedConv2d | FusedLinear) -> None:
    if fused.bn is not None and _can_fold(fused.bn):
        layer = fused.conv if isinstance(fused, FusedConv2d) else fused.linear
        _fold_into(layer, fused.bn)
        fused.bn = None


def _fold_after(gm: fx.GraphModule, bn_node: fx.Node) -> None:
    producer = bn_node.args[0]
    if not isinstance(producer, fx.Node) or len(producer.users) != 1:
        return
    bn = gm.get_submodule(bn_node.target)
    layer = _layer_before(gm, producer, bn)
    if layer is not None and _can_fold(bn) and bn.num_features == layer.weight.shape[0]:
        _fold_into(layer, bn)
        remove(bn_node, producer)


def _layer_before(gm: fx.GraphModule, producer: fx.Node, bn: nn.Module) -> nn.Module | None:
    """The conv/linear computing `producer`, if `bn` can be folded into it."""
    if producer.op != "call_module":
        return None
    if isinstance(bn, nn.BatchNorm2d):
        if calls_module(gm, producer, nn.Conv2d):
            return gm.get_submodule(producer.target)
        if calls_module(gm, producer, FusedConv2d):
            return _bare_layer(gm.get_submodule(producer.target), "conv")
        return None
    rank = len(shape_of(producer) or (0, 0))
    if rank != 2:
        return None
    if calls_module(gm, producer, nn.Linear):
        return gm.get_submodule(producer.target)
    if calls_module(gm, producer, FusedLinear):
        return _bare_layer(gm.get_submodule(producer.target), "linear")
    return None


def _bare_layer(fused: FusedConv2d | FusedLinear, attr: str) -> nn.Module | None:
    """The layer of a fused module with no BN and no activation inside (else None)."""
    if fused.bn is None and fused.activation is None:
        return getattr(fused, attr)
    return None
