"""Canonical forms of the weighted layers: conv as nn.Conv2d, linear as nn.Linear.

- Every call site of a Conv2d/Linear/BatchNorm module owns its module (a module called
  twice is copied), so that folding and quantizing one call never changes another.
- `F.batch_norm` in eval with `get_attr` statistics (timm's `BatchNormAct2d`) becomes an
  `nn.BatchNorm2d` named `<owner>_bn`, so that it folds like any BN.
- `F.conv2d` / `F.linear` with `get_attr` weights become modules. The module takes the
  place of the module that owned the weight (`a.b` for `a.b.weight`) when nothing else of
  it is used, so names match the user's model (`_blocks.3._depthwise_conv`); otherwise it
  is named `<weight name>_conv` / `_linear`.
- Conv padding is a pair of ints: "valid"/"same" are resolved (an uneven "same" becomes an
  explicit pad), and a symmetric zero pad feeding only a conv is merged into its padding.
"""

from __future__ import annotations

import copy
import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.graph._fx import bind, calls_module, shape_of, unique_name

__all__ = [
    "functional_layers_to_modules",
    "merge_pads_into_convs",
    "one_module_per_call",
    "resolve_conv_padding",
]

_OWNED = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
_CONV = (("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
         {"bias": None, "stride": 1, "padding": 0, "dilation": 1, "groups": 1})
_LINEAR = (("input", "weight", "bias"), {"bias": None})
_BATCH_NORM = (("input", "running_mean", "running_var", "weight", "bias", "training", "momentum",
                "eps"), {"weight": None, "bias": None, "training": False, "momentum": 0.1,
                         "eps": 1e-5})


def one_module_per_call(gm: fx.GraphModule) -> None:
    """Give each repeated call of a conv/linear/BN module its own deep copy."""
    seen: set[str] = set()
    for node in gm.graph.nodes:
        if not calls_module(gm, node, _OWNED):
            continue
        if node.target in seen:
            name = unique_name(gm, node.target)
            gm.add_submodule(name, copy.deepcopy(gm.get_submodule(node.target)))
            node.target = name
        seen.add(node.target)


def functional_layers_to_modules(gm: fx.GraphModule) -> None:
    """F.conv2d / F.linear with parameter (get_attr) weights -> nn.Conv2d / nn.Linear calls."""
    for node in list(gm.graph.nodes):
        if node.op != "call_function":
            continue
        if node.target is F.conv2d:
            _to_module(gm, node, bind(node, *_CONV), _make_conv)
        elif node.target is F.linear:
            _to_module(gm, node, bind(node, *_LINEAR), _make_linear)
        elif node.target is F.batch_norm:
            _batch_norm_to_module(gm, node, bind(node, *_BATCH_NORM))


def _batch_norm_to_module(gm: fx.GraphModule, node: fx.Node, a: dict[str, Any]) -> None:
    tensors = [a[k] for k in ("running_mean", "running_var", "weight", "bias")]
    if a["training"] is not False or not all(
            t is None or (isinstance(t, fx.Node) and t.op == "get_attr") for t in tensors[:2] + [
                t for t in tensors[2:] if t is not None]) or tensors[0] is None:
        return
    if len(shape_of(a["input"]) or ()) != 4 or not isinstance(a["eps"], float | int):
        return
    mean, var, weight, bias = (None if t is None else operator.attrgetter(t.target)(gm).detach()
                               for t in tensors)
    bn = nn.BatchNorm2d(mean.numel(), eps=float(a["eps"]), affine=True).to(mean.dtype)
    bn.running_mean.copy_(mean)
    bn.running_var.copy_(var)
    with torch.no_grad():
        bn.weight.copy_(weight if weight is not None else torch.ones_like(mean))
        bn.bias.copy_(bias if bias is not None else torch.zeros_like(mean))
    name = unique_name(gm, f"{tensors[0].target.rpartition('.')[0] or 'batch_norm'}_bn")
    gm.add_submodule(name, bn.eval())
    node.op, node.target, node.args, node.kwargs = "call_module", name, (a["input"],), {}


def _to_module(gm: fx.GraphModule, node: fx.Node, a: dict[str, Any], make: Any) -> None:
    weight, bias = a["weight"], a["bias"]
    params = [p for p in (weight, bias) if p is not None]
    if not all(isinstance(p, fx.Node) and p.op == "get_attr" for p in params):
        return
    if any(isinstance(v, fx.Node) for k, v in a.items() if k not in ("input", "weight", "bias")):
        return
    fetch = {p: _parameter(gm, p.target) for p in params}
    module = make(fetch[weight], fetch.get(bias), a)
    name = _module_name(gm, node, weight, bias, type(module))
    gm.add_submodule(name, module)
    node.op, node.target, node.args, node.kwargs = "call_module", name, (a["input"],), {}


def _parameter(gm: fx.GraphModule, target: str) -> nn.Parameter:
    value = operator.attrgetter(target)(gm)
    if isinstance(value, nn.Parameter):
        return value
    return nn.Parameter(value.detach(), requires_grad=False)


def _make_conv(weight: nn.Parameter, bias: nn.Parameter | None, a: dict[str, Any]) -> nn.Conv2d:
    out_channels, in_per_group, kh, kw = weight.shape
    conv = nn.Conv2d(
        in_per_group * a["groups"], out_channels, (kh, kw), stride=a["stride"],
        padding=a["padding"], dilation=a["dilation"], groups=a["groups"], bias=bias is not None,
    )
    conv.weight, conv.bias = weight, bias
    return conv


def _make_linear(weight: nn.Parameter, bias: nn.Parameter | None, a: dict[str, Any]) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    linear.weight, linear.bias = weight, bias
    return linear


def _module_name(
    gm: fx.GraphModule, node: fx.Node, weight: fx.Node, bias: fx.Node | None, kind: type
) -> str:
    """The owner's name (`a.b` for weight `a.b.weight`) when nothing else of `a.b` is used."""
    owner, _, attr = weight.target.rpartition(".")
    mine = {weight, bias} - {None}
    if owner and attr == "weight":
        users_ok = all(set(p.users) == {node} for p in mine)
        others = [n for n in gm.graph.nodes if n not in mine and _refers_to(n, owner)]
        if users_ok and not others:
            return owner
    suffix = "conv" if kind is nn.Conv2d else "linear"
    return unique_name(gm, f"{weight.target}_{suffix}")


def _refers_to(node: fx.Node, owner: str) -> bool:
    if node.op not in ("call_module", "get_attr"):
        return False
    return node.target == owner or node.target.startswith(owner + ".")


def resolve_conv_padding(gm: fx.GraphModule) -> None:
    """padding="valid"/"same" -> int pairs; uneven "same" -> explicit F.pad + padding 0."""
    for node in list(gm.graph.nodes):
        if not calls_module(gm, node, nn.Conv2d):
            continue
        conv = gm.get_submodule(node.target)
        if conv.padding == "valid":
            conv.padding = (0, 0)
        elif conv.padding == "same":
            _resolve_same(node, conv)


def _resolve_same(node: fx.Node, conv: nn.Conv2d) -> None:
    totals = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size, strict=True)]
    before = [t // 2 for t in totals]
    after = [t - b for t, b in zip(totals, before, strict=True)]
    if before == after:
        conv.padding = tuple(before)
        return
    conv.padding = (0, 0)
    pad = (before[1], after[1], before[0], after[0])
    with node.graph.inserting_before(node):
        padded = node.graph.call_function(
            F.pad, (node.args[0], pad), {"mode": "constant", "value": 0.0}
        )
    node.args = (padded,)


def merge_pads_into_convs(gm: fx.GraphModule) -> None:
    """A symmetric zero F.pad whose only user is a conv becomes part of the conv's padding."""
    for node in list(gm.graph.nodes):
        if not calls_module(gm, node, nn.Conv2d):
            continue
        conv = gm.get_submodule(node.target)
        pad_node = node.args[0]
        sides = _symmetric_zero_pad(pad_node)
        if sides is None or len(pad_node.users) != 1 or conv.padding_mode != "zeros":
            continue
        if not all(isinstance(p, int) for p in conv.padding):
            continue
        conv.padding = (conv.padding[0] + sides[0], conv.padding[1] + sides[1])
        node.args = (pad_node.args[0],)
        node.graph.erase_node(pad_node)


def _symmetric_zero_pad(node: Any) -> tuple[int, int] | None:
    """(pad_h, pad_w) of a canonical zero F.pad that pads equally on both sides, else None."""
    if not (isinstance(node, fx.Node) and node.op == "call_function" and node.target is F.pad):
        return None
    if node.kwargs != {"mode": "constant", "value": 0.0}:
        return None
    pad = tuple(node.args[1]) + (0, 0) * ((4 - len(node.args[1])) // 2)
    if len(pad) != 4 or min(pad) < 0 or pad[0] != pad[1] or pad[2] != pad[3]:
        return None
    return pad[2], pad[0]
