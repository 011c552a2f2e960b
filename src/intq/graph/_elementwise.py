"""Canonical forms of elementwise and copy ops: clamps, add, concat, pad, dropout/identity.

Each rule takes `(gm, node)` and rewrites the node in place into its canonical form (see
`intq.graph.normalize`), or leaves it untouched when it has none.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from numbers import Number
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.graph._fx import bind, remove, rewrite, shape_of

__all__ = ["RULES", "eval_identity_rule"]

Rule = Callable[[fx.GraphModule, fx.Node], None]

_CLAMP = (("input", "min", "max"), {"min": None, "max": None})
_HARDTANH = (("input", "min_val", "max_val", "inplace"), {"min_val": -1.0, "max_val": 1.0})
_DROPOUT_TRAINING_DEFAULT = {
    F.dropout: True,
    F.dropout1d: True,
    F.dropout2d: True,
    F.dropout3d: True,
    F.alpha_dropout: False,
    F.feature_alpha_dropout: False,
}
_IDENTITY_MODULES = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout, nn.Identity,
)


def _to_clamp(node: fx.Node, x: Any, low: Any, high: Any) -> None:
    """relu if [0, inf), relu6 if [0, 6], torch.clamp(x, min=, max=) otherwise."""
    if not all(b is None or isinstance(b, Number) for b in (low, high)):
        return
    if low == 0 and high is None:
        rewrite(node, F.relu, (x,))
    elif low == 0 and high == 6:
        rewrite(node, F.relu6, (x,))
    else:
        rewrite(node, torch.clamp, (x,), {"min": low, "max": high})


def _relu(gm: fx.GraphModule, node: fx.Node) -> None:
    rewrite(node, F.relu, (node.args[0],))


def _relu6(gm: fx.GraphModule, node: fx.Node) -> None:
    rewrite(node, F.relu6, (node.args[0],))


def _hardtanh(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, *_HARDTANH)
    _to_clamp(node, a["input"], a["min_val"], a["max_val"])


def _hardtanh_module(gm: fx.GraphModule, node: fx.Node) -> None:
    module = gm.get_submodule(node.target)
    _to_clamp(node, node.args[0], module.min_val, module.max_val)


def _clamp(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, *_CLAMP)
    _to_clamp(node, a["input"], a["min"], a["max"])


def _clamp_min(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, ("input", "min"), {})
    _to_clamp(node, a["input"], a["min"], None)


def _add(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, ("input", "other", "alpha"), {"alpha": 1})
    if a["alpha"] == 1 and isinstance(a["input"], fx.Node):
        rewrite(node, operator.add, (a["input"], a["other"]))


def _cat(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, ("tensors", "dim"), {"dim": node.kwargs.get("axis", 0)})
    tensors, dim = list(a["tensors"]), a["dim"]
    rank = len(shape_of(tensors[0]) or ())
    if isinstance(dim, int) and dim < 0 and rank:
        dim += rank
    rewrite(node, torch.cat, (tensors, dim))


def _pad(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, ("input", "pad", "mode", "value"), {"mode": "constant", "value": None})
    if a["mode"] == "constant" and all(isinstance(p, int) for p in a["pad"]):
        value = 0.0 if a["value"] is None else float(a["value"])
        rewrite(node, F.pad, (a["input"], tuple(a["pad"])), {"mode": "constant", "value": value})


def _pad_module(gm: fx.GraphModule, node: fx.Node) -> None:
    module = gm.get_submodule(node.target)
    padding = {"mode": "constant", "value": float(module.value)}
    rewrite(node, F.pad, (node.args[0], tuple(module.padding)), padding)


def _dropout(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, ("input", "p", "training"), {"training": _DROPOUT_TRAINING_DEFAULT[node.target]})
    if a["training"] is False:
        remove(node, a["input"])


def _identity(gm: fx.GraphModule, node: fx.Node) -> None:
    remove(node, node.args[0])


_EVAL_IDENTITIES = {  # functions that return their input when training is False
    "torchvision.ops.stochastic_depth.stochastic_depth": ("input", "p", "mode", "training"),
}


def eval_identity_rule(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Drop a call of a known regularizer (stochastic depth) made with training=False; True
    when it did."""
    if node.op != "call_function":
        return False
    names = _EVAL_IDENTITIES.get(f"{getattr(node.target, '__module__', '')}."
                                 f"{getattr(node.target, '__name__', '')}")
    if names is None or bind(node, names, {"training": True})["training"] is not False:
        return False
    remove(node, node.args[0])
    return True


RULES: dict[tuple[str, Any], Rule] = {
    **{("call_function", f): _relu for f in (F.relu, torch.relu, torch.relu_)},
    ("call_function", F.relu6): _relu6,
    ("call_function", F.hardtanh): _hardtanh,
    ("call_function", F.hardtanh_): _hardtanh,
    **{("call_function", f): _clamp for f in (torch.clamp, torch.clip, torch.clamp_, torch.clip_)},
    ("call_function", torch.clamp_min): _clamp_min,
    **{("call_function", f): _add for f in (operator.add, operator.iadd, torch.add)},
    **{("call_function", f): _cat for f in (torch.cat, torch.concat, torch.concatenate)},
    ("call_function", F.pad): _pad,
    **{("call_function", f): _dropout for f in _DROPOUT_TRAINING_DEFAULT},
    ("call_method", "relu"): _relu,
    ("call_method", "relu_"): _relu,
    **{("call_method", m): _clamp for m in ("clamp", "clip", "clamp_", "clip_")},
    **{("call_method", m): _clamp_min for m in ("clamp_min", "clamp_min_")},
    **{("call_method", m): _add for m in ("add", "add_")},
    ("call_method", "contiguous"): _identity,
    ("call_module", nn.ReLU): _relu,
    ("call_module", nn.ReLU6): _relu6,
    ("call_module", nn.Hardtanh): _hardtanh_module,
    ("call_module", nn.ZeroPad2d): _pad_module,
    ("call_module", nn.ConstantPad2d): _pad_module,
    **{("call_module", m): _identity for m in _IDENTITY_MODULES},
}
