"""Canonical forms of elementwise functions of one tensor, and of the product of two tensors.

Elementwise functions (integer form: a 256-entry lookup table, `OpKind.LOOKUP`) become
`call_function` nodes of a torch function with the tensor first and only constants after it:

| from | canonical node |
|---|---|
| nn.Hardswish, x.hardswish() | `F.hardswish(x)` |
| nn.Hardsigmoid | `F.hardsigmoid(x)` |
| nn.SiLU, x.silu() | `F.silu(x)` |
| nn.Sigmoid, x.sigmoid(), torch.sigmoid, F.sigmoid | `torch.sigmoid(x)` |
| nn.Tanh, x.tanh(), F.tanh | `torch.tanh(x)` |
| nn.GELU(approximate=a), F.gelu | `F.gelu(x, approximate=a)` |
| nn.LeakyReLU(s), F.leaky_relu | `F.leaky_relu(x, s)` |
| nn.ELU(a), F.elu | `F.elu(x, a)` |
| nn.Mish, x.mish() | `F.mish(x)` |
| nn.Softplus(b, t), F.softplus | `F.softplus(x, b, t)` |
| x + c, x - c, c - x, x * c, x / c (c a Python number), torch.mul/sub/div, x.mul ... |
| | `operator.add/sub/mul/truediv(x, c)` (or `(c, x)`) |
| a * b, torch.mul(a, b), a.mul(b) of two activations | `operator.mul(a, b)` (`OpKind.MUL`) |
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from numbers import Number
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.graph._fx import bind, rewrite

__all__ = ["LOOKUP_FUNCTIONS", "RULES", "SCALAR_OPERATORS"]

Rule = Callable[[fx.GraphModule, fx.Node], None]

#: canonical elementwise functions of one tensor (constant extra arguments allowed)
LOOKUP_FUNCTIONS = frozenset({F.hardswish, F.hardsigmoid, F.silu, torch.sigmoid, torch.tanh,
                              F.gelu, F.leaky_relu, F.elu, F.mish, F.softplus, torch.clamp})
#: binary operators that are an elementwise function when one side is a Python number
SCALAR_OPERATORS = frozenset({operator.add, operator.sub, operator.mul, operator.truediv})

_SIMPLE = {  # functions of x alone (module, method and functional spellings)
    F.hardswish: (nn.Hardswish, "hardswish"),
    F.hardsigmoid: (nn.Hardsigmoid, "hardsigmoid"),
    F.silu: (nn.SiLU, "silu"),
    torch.sigmoid: (nn.Sigmoid, "sigmoid"),
    torch.tanh: (nn.Tanh, "tanh"),
    F.mish: (nn.Mish, "mish"),
}
_ALIASES = {F.sigmoid: torch.sigmoid, F.tanh: torch.tanh}
_OPERATORS = {
    operator.add: operator.add, operator.iadd: operator.add, torch.add: operator.add,
    operator.sub: operator.sub, operator.isub: operator.sub, torch.sub: operator.sub,
    operator.mul: operator.mul, operator.imul: operator.mul, torch.mul: operator.mul,
    operator.truediv: operator.truediv, operator.itruediv: operator.truediv,
    torch.div: operator.truediv,
}
_METHOD_OPERATORS = {"add": operator.add, "sub": operator.sub, "mul": operator.mul,
                     "div": operator.truediv, "mul_": operator.mul, "div_": operator.truediv,
                     "sub_": operator.sub}


def _simple(target: Callable) -> Rule:
    def rule(gm: fx.GraphModule, node: fx.Node) -> None:
        if len(node.args) >= 1 and isinstance(node.args[0], fx.Node):
            rewrite(node, target, (node.args[0],))
    return rule


def _gelu(gm: fx.GraphModule, node: fx.Node) -> None:
    if node.op == "call_module":
        approximate = gm.get_submodule(node.target).approximate
    else:
        approximate = bind(node, ("input", "approximate"), {"approximate": "none"})["approximate"]
    rewrite(node, F.gelu, (node.args[0],), {"approximate": approximate})


def _with_constants(target: Callable, names: tuple[str, ...], defaults: dict) -> Rule:
    """`target(x, *constants)` from the functional or module spelling (module attributes)."""
    def rule(gm: fx.GraphModule, node: fx.Node) -> None:
        if node.op == "call_module":
            module = gm.get_submodule(node.target)
            values = [getattr(module, n) for n in names]
        else:
            a = bind(node, ("input", *names), defaults)
            values = [a[n] for n in names]
        if all(isinstance(v, Number) for v in values):
            rewrite(node, target, (node.args[0], *values))
    return rule


def _operator(gm: fx.GraphModule, node: fx.Node) -> None:
    """Binary arithmetic: canonical operator when it is x op number, number op x or a·b."""
    if node.op == "call_method":
        target = _METHOD_OPERATORS[node.target]
    else:
        target = _OPERATORS[node.target]
    a = bind(node, ("input", "other", "alpha"), {"alpha": 1})
    if node.kwargs.get("rounding_mode") is not None or a["alpha"] != 1:
        return
    x, other = a["input"], a["other"]
    if target is operator.add and isinstance(x, fx.Node) and isinstance(other, fx.Node):
        return  # two tensors: the add rule of intq.graph._elementwise
    if isinstance(x, fx.Node) or isinstance(other, fx.Node):
        rewrite(node, target, (x, other))


RULES: dict[tuple[str, Any], Rule] = {
    **{("call_function", f): _simple(f) for f in _SIMPLE},
    **{("call_function", alias): _simple(f) for alias, f in _ALIASES.items()},
    **{("call_module", module): _simple(f) for f, (module, _) in _SIMPLE.items()},
    **{("call_method", method): _simple(f) for f, (_, method) in _SIMPLE.items()},
    **{("call_method", f"{method}_"): _simple(f) for f, (_, method) in _SIMPLE.items()},
    ("call_function", F.gelu): _gelu,
    ("call_module", nn.GELU): _gelu,
    ("call_function", F.leaky_relu): _with_constants(F.leaky_relu, ("negative_slope",),
                                                     {"negative_slope": 0.01}),
    ("call_module", nn.LeakyReLU): _with_constants(F.leaky_relu, ("negative_slope",), {}),
    ("call_function", F.elu): _with_constants(F.elu, ("alpha",), {"alpha": 1.0}),
    ("call_module", nn.ELU): _with_constants(F.elu, ("alpha",), {}),
    ("call_function", F.softplus): _with_constants(F.softplus, ("beta", "threshold"),
                                                   {"beta": 1.0, "threshold": 20.0}),
    ("call_module", nn.Softplus): _with_constants(F.softplus, ("beta", "threshold"), {}),
    **{("call_function", f): _operator for f in _OPERATORS if f not in
       (operator.add, operator.iadd, torch.add)},
    **{("call_method", m): _operator for m in _METHOD_OPERATORS if not m.startswith("add")},
}
