"""Canonical forms of the lossless index ops: channel slices, splits, permutes, nearest resize.

They need the shapes of the example input; without them the nodes stay as traced.

| from | canonical node |
|---|---|
| x[:, a:b], x[:, :, a:b:s], torch.narrow | `operator.getitem(x, (slice(None),)·axis +` |
| | `(slice(a, b, s),))`: one sliced axis >= 1, 0 <= a < b <= size |
| `getitem` of torch.split / x.split / chunk | one slice node per piece used |
| x.transpose(i, j), x.permute(...) | `torch.permute(x, perm)` (an integer form if perm[0] == 0) |
| x.view(...) | `x.reshape(...)`: valid after a dropped `.contiguous()` |
| F.interpolate / nn.Upsample, nearest, | `F.interpolate(x, scale_factor=(fh, fw),` |
| integer factors | `mode="nearest")` |
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.graph._fx import bind, rewrite, shape_of

__all__ = ["RULES", "resize_factors", "slice_of"]

Rule = Callable[[fx.GraphModule, fx.Node], None]

_SPLITS = {torch.split: "split", torch.chunk: "chunk", torch.tensor_split: None}


def slice_of(node: fx.Node) -> tuple[int, int, int, int] | None:
    """(axis, start, stop, step) of a canonical slice node (see the module docstring), or None."""
    if node.op != "call_function" or node.target is not operator.getitem:
        return None
    index = node.args[1]
    if not isinstance(index, tuple) or not all(isinstance(i, slice) for i in index):
        return None
    cut = [k for k, s in enumerate(index) if s != slice(None)]
    if len(cut) != 1 or cut[0] != len(index) - 1 or cut[0] < 1:
        return None
    s = index[-1]
    if not all(isinstance(v, int) for v in (s.start, s.stop, s.step)):
        return None
    return cut[0], s.start, s.stop, s.step


def resize_factors(node: fx.Node) -> tuple[int, int] | None:
    """(fh, fw) of a canonical nearest resize node, or None."""
    if node.op != "call_function" or node.target is not F.interpolate or node.args[1:]:
        return None
    factors, mode = node.kwargs.get("scale_factor"), node.kwargs.get("mode")
    if mode != "nearest" or set(node.kwargs) != {"scale_factor", "mode"}:
        return None
    return factors if isinstance(factors, tuple) else None


def _canonical_slice(node: fx.Node, x: fx.Node, axis: int, start: int, stop: int,
                     step: int) -> None:
    index = (slice(None),) * axis + (slice(start, stop, step),)
    rewrite(node, operator.getitem, (x, index))


def _getitem(gm: fx.GraphModule, node: fx.Node) -> None:
    x, index = node.args
    if not isinstance(x, fx.Node):
        return
    if x.op in ("call_function", "call_method") and _split_sizes(x) is not None:
        _piece_of_split(node, x, index)
        return
    shape = shape_of(x)
    if shape is None or not isinstance(index, tuple | slice):
        return
    index = index if isinstance(index, tuple) else (index,)
    if not index or not all(isinstance(i, slice) for i in index) or len(index) > len(shape):
        return
    cut = [k for k, s in enumerate(index) if s != slice(None)]
    if len(cut) == 1 and cut[0] >= 1:
        start, stop, step = index[cut[0]].indices(shape[cut[0]])
        if step >= 1 and start < stop:
            _canonical_slice(node, x, cut[0], start, stop, step)


def _narrow(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, ("input", "dim", "start", "length"), {})
    shape = shape_of(a["input"])
    if shape is None or not all(isinstance(a[k], int) for k in ("dim", "start", "length")):
        return
    axis, start = a["dim"] % len(shape), a["start"] % shape[a["dim"]]
    if axis >= 1 and a["length"] >= 1:
        _canonical_slice(node, a["input"], axis, start, start + a["length"], 1)


def _split_sizes(node: fx.Node) -> tuple[int, list[int]] | None:
    """(axis, piece sizes) of a split/chunk node whose input shape is known."""
    if node.op == "call_method" and node.target in ("split", "chunk"):
        kind = node.target
    elif node.op == "call_function" and node.target in (torch.split, torch.chunk):
        kind = _SPLITS[node.target]
    else:
        return None
    names = ("input", "split_size_or_sections" if kind == "split" else "chunks", "dim")
    a = bind(node, names, {"dim": 0})
    shape = shape_of(a["input"])
    sizes = a[names[1]]
    if shape is None or not isinstance(a["dim"], int):
        return None
    axis = a["dim"] % len(shape)
    total = shape[axis]
    if kind == "chunk":
        if not isinstance(sizes, int):
            return None
        each = -(-total // sizes)
        sizes = [min(each, total - k) for k in range(0, total, each)]
    elif isinstance(sizes, int):
        sizes = [min(sizes, total - k) for k in range(0, total, sizes)]
    elif not all(isinstance(s, int) for s in sizes):
        return None
    return axis, list(sizes)


def _piece_of_split(node: fx.Node, split: fx.Node, index: Any) -> None:
    axis, sizes = _split_sizes(split)
    if axis < 1 or not isinstance(index, int):
        return
    index %= len(sizes)
    start = sum(sizes[:index])
    _canonical_slice(node, split.args[0] if split.args else split.kwargs["input"], axis, start,
                     start + sizes[index], 1)


def _transpose(gm: fx.GraphModule, node: fx.Node) -> None:
    a = bind(node, ("input", "dim0", "dim1"), {})
    shape = shape_of(a["input"])
    if shape is None or not all(isinstance(a[k], int) for k in ("dim0", "dim1")):
        return
    perm = list(range(len(shape)))
    i, j = a["dim0"] % len(shape), a["dim1"] % len(shape)
    perm[i], perm[j] = perm[j], perm[i]
    rewrite(node, torch.permute, (a["input"], tuple(perm)))


def _permute(gm: fx.GraphModule, node: fx.Node) -> None:
    x = node.args[0]
    dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
    if node.op == "call_function" and "dims" in node.kwargs:
        dims = (node.kwargs["dims"],)
    if len(dims) == 1 and isinstance(dims[0], tuple | list):
        dims = tuple(dims[0])
    shape = shape_of(x)
    if shape is None or not all(isinstance(d, int) for d in dims):
        return
    rewrite(node, torch.permute, (x, tuple(d % len(shape) for d in dims)))


def _interpolate(gm: fx.GraphModule, node: fx.Node) -> None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        a = {"input": node.args[0], "size": module.size, "scale_factor": module.scale_factor,
             "mode": module.mode, "align_corners": module.align_corners}
    else:
        a = bind(node, ("input", "size", "scale_factor", "mode", "align_corners"),
                 {"size": None, "scale_factor": None, "mode": "nearest", "align_corners": None})
    factors = _integer_factors(shape_of(a["input"]), shape_of(node))
    if a["mode"] == "nearest" and factors is not None:
        rewrite(node, F.interpolate, (a["input"],), {"scale_factor": factors, "mode": "nearest"})


def _integer_factors(shape_in, shape_out) -> tuple[int, int] | None:
    if shape_in is None or shape_out is None or len(shape_in) != 4 or len(shape_out) != 4:
        return None
    if shape_in[:2] != shape_out[:2]:
        return None
    factors = tuple(o // i for i, o in zip(shape_in[2:], shape_out[2:], strict=True))
    if any(f < 1 or f * i != o for f, i, o in zip(factors, shape_in[2:], shape_out[2:],
                                                  strict=True)):
        return None
    return factors


def _view_as_reshape(gm: fx.GraphModule, node: fx.Node) -> None:
    """x.view(...) -> x.reshape(...): equal values, and valid after a dropped .contiguous()."""
    node.target = "reshape"


RULES: dict[tuple[str, Any], Rule] = {
    ("call_method", "view"): _view_as_reshape,
    ("call_function", operator.getitem): _getitem,
    ("call_function", torch.narrow): _narrow,
    ("call_method", "narrow"): _narrow,
    ("call_function", torch.transpose): _transpose,
    ("call_method", "transpose"): _transpose,
    ("call_function", torch.permute): _permute,
    ("call_method", "permute"): _permute,
    ("call_function", F.interpolate): _interpolate,
    ("call_module", nn.Upsample): _interpolate,
    ("call_module", nn.UpsamplingNearest2d): _interpolate,
}
