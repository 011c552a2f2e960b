"""Canonical forms of pooling: max pool, average pool and global average pool.

Every window parameter is spelled out as a pair; average pooling that covers the whole
feature map, `adaptive_avg_pool2d` to 1x1 and `mean` over (H, W) all become the global
average pool `F.adaptive_avg_pool2d(x, 1)` (followed by `torch.flatten(x, 1)` when the mean
dropped the spatial dims).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.graph._fx import bind, rewrite, shape_of

__all__ = ["RULES"]

Rule = Callable[[fx.GraphModule, fx.Node], None]

_MAX = (
    ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    {"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False, "return_indices": False},
)
_AVG = (
    ("input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad",
     "divisor_override"),
    {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
     "divisor_override": None},
)
_MEAN = (("input", "dim", "keepdim", "dtype"), {"dim": None, "keepdim": False, "dtype": None})


def _pair(value: Any) -> tuple[Any, Any]:
    return (value, value) if isinstance(value, int) or value is None else tuple(value)


def _window(a: dict[str, Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    kernel = _pair(a["kernel_size"])
    stride = kernel if a["stride"] in (None, [], ()) else _pair(a["stride"])
    return kernel, stride


def _module_args(gm: fx.GraphModule, node: fx.Node, names: tuple[str, ...]) -> dict[str, Any]:
    module = gm.get_submodule(node.target)
    return {"input": node.args[0], **{n: getattr(module, n) for n in names[1:]}}


def _set_max_pool(node: fx.Node, a: dict[str, Any]) -> None:
    if a["return_indices"]:
        return
    kernel, stride = _window(a)
    rewrite(node, F.max_pool2d, (a["input"],), {
        "kernel_size": kernel, "stride": stride, "padding": _pair(a["padding"]),
        "dilation": _pair(a["dilation"]), "ceil_mode": bool(a["ceil_mode"]),
    })


def _set_avg_pool(node: fx.Node, a: dict[str, Any]) -> None:
    kernel, stride = _window(a)
    padding = _pair(a["padding"])
    shape = shape_of(a["input"])
    if shape and len(shape) == 4 and kernel == shape[2:] and padding == (0, 0):
        if a["divisor_override"] is None:
            rewrite(node, F.adaptive_avg_pool2d, (a["input"], 1))
            return
    ceil_mode, count_include_pad = bool(a["ceil_mode"]), bool(a["count_include_pad"])
    if shape and len(shape) == 4 and _windows_tile(shape[2:], kernel, stride, padding):
        ceil_mode = False  # no partial window at the end: ceil and floor give the same size
        count_include_pad = count_include_pad or padding == (0, 0)  # nothing to count
    rewrite(node, F.avg_pool2d, (a["input"],), {
        "kernel_size": kernel, "stride": stride, "padding": padding,
        "ceil_mode": ceil_mode, "count_include_pad": count_include_pad,
        "divisor_override": a["divisor_override"],
    })


def _windows_tile(size, kernel, stride, padding) -> bool:
    """(size + 2·padding - kernel) divisible by stride in both dims: the last window ends at
    the padded edge, so ceil_mode adds no window."""
    return all((s + 2 * p - k) % t == 0
               for s, k, t, p in zip(size, kernel, stride, padding, strict=True))


def _set_adaptive(node: fx.Node, x: fx.Node, output_size: Any) -> None:
    """1x1 -> global pool; evenly dividing sizes -> avg_pool2d; others stay adaptive."""
    shape = shape_of(x)
    size = _pair(output_size)
    if shape and len(shape) == 4:
        size = tuple(s if o is None else o for o, s in zip(size, shape[2:], strict=True))
    divisible = bool(shape) and len(shape) == 4
    divisible = divisible and all(s % o == 0 for s, o in zip(shape[2:], size, strict=True))
    if size == (1, 1):
        rewrite(node, F.adaptive_avg_pool2d, (x, 1))
    elif divisible:
        kernel = tuple(s // o for s, o in zip(shape[2:], size, strict=True))
        _set_avg_pool(node, {**_AVG[1], "input": x, "kernel_size": kernel})
    else:
        rewrite(node, F.adaptive_avg_pool2d, (x, size))


def _max_pool(gm: fx.GraphModule, node: fx.Node) -> None:
    _set_max_pool(node, bind(node, *_MAX))


def _max_pool_module(gm: fx.GraphModule, node: fx.Node) -> None:
    _set_max_pool(node, _module_args(gm, node, _MAX[0]))


def _avg_pool(gm: fx.GraphModule, node: fx.Node) -> None:
    _set_avg_pool(node, bind(node, *_AVG))


def _avg_pool_module(gm: fx.GraphModule, node: fx.Node) -> None:
    _set_avg_pool(node, _module_args(gm, node, _AVG[0]))


def _adaptive(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, ("input", "output_size"), {})
    _set_adaptive(node, a["input"], a["output_size"])


def _adaptive_module(gm: fx.GraphModule, node: fx.Node) -> None:
    _set_adaptive(node, node.args[0], gm.get_submodule(node.target).output_size)


def _mean(gm: fx.GraphModule, node: fx.Node) -> None:
    """mean over (H, W) of an NCHW tensor -> global pool [+ flatten when not keepdim]."""
    a = bind(node, *_MEAN)
    shape = shape_of(a["input"])
    if not shape or len(shape) != 4 or a["dim"] is None or a["dtype"] is not None:
        return
    dims = [a["dim"]] if isinstance(a["dim"], int) else list(a["dim"])
    if sorted(d % 4 for d in dims) != [2, 3]:
        return
    rewrite(node, F.adaptive_avg_pool2d, (a["input"], 1))
    node.meta.pop("tensor_meta", None)
    node.meta.pop("type", None)
    if not a["keepdim"]:
        with node.graph.inserting_after(node):
            flat = node.graph.call_function(torch.flatten, (node, 1))
        node.replace_all_uses_with(flat, delete_user_cb=lambda user: user is not flat)


RULES: dict[tuple[str, Any], Rule] = {
    ("call_function", F.max_pool2d): _max_pool,
    ("call_function", torch.max_pool2d): _max_pool,
    ("call_function", F.avg_pool2d): _avg_pool,
    ("call_function", F.adaptive_avg_pool2d): _adaptive,
    ("call_function", torch.mean): _mean,
    ("call_method", "mean"): _mean,
    ("call_module", nn.MaxPool2d): _max_pool_module,
    ("call_module", nn.AvgPool2d): _avg_pool_module,
    ("call_module", nn.AdaptiveAvgPool2d): _adaptive_module,
}
