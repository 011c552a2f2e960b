"""Capture a user's model as a torch.fx GraphModule, with errors that say how to get through.

`capture` traces a deep copy of the model in eval mode (the user's model is never touched).
Modules named in `leaf_modules` (qualified names or classes) stay single `call_module` nodes:
they are not looked into and later run in float (the float islands). A submodule that
torch.fx cannot trace (data-dependent control flow, tensors used as Python values) becomes a
leaf by itself, innermost first, and the trace starts again (at most `_MAX_AUTO_LEAVES`
times); `gm.meta[AUTO_LEAVES]` maps each to the reason. When the model's own forward cannot
be traced, one `IntqError` names the source line and the way out (move the code into a
submodule), never a raw fx traceback. With an example input the
traced graph is run against the model and must reproduce its output.
"""

from __future__ import annotations

import copy
import os
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import fx, nn
from torch.utils import _pytree

from intq.errors import IntqError
from intq.graph._fx import EXAMPLE_INPUTS, LEAF_MODULES, finish, propagate_shapes
from intq.graph.fused import FusedAdd, FusedConv2d, FusedLinear

__all__ = ["AUTO_LEAVES", "capture"]

_TORCH_DIR = os.path.dirname(torch.__file__)
_MAX_AUTO_LEAVES = 64
#: gm.meta key: {qualified module name: why torch.fx could not trace it} for automatic leaves
AUTO_LEAVES = "intq_auto_leaves"
_CAPTURE_RTOL = 1e-5
_FUSED = (FusedConv2d, FusedLinear, FusedAdd)


def capture(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    *,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
) -> fx.GraphModule:
    """Symbolically trace a deep copy of `model` in eval mode.

    `example_input` (a tensor or a tuple of tensors, one per forward argument) enables shape
    propagation (`node.meta["tensor_meta"]`) and a check that the graph reproduces the model
    (relative error <= 1e-5). `leaf_modules` lists qualified names ("layer1.0.gate") or
    module classes to keep as opaque float calls.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"capture expects an nn.Module, got {type(model).__name__}")
    inputs = _as_inputs(example_input)
    names, types = _split_leaves(model, leaf_modules)
    root = _eval_copy(model)
    tracer, graph, auto = _trace_with_auto_leaves(root, names, types)
    gm = fx.GraphModule(tracer.root, graph, type(model).__name__)
    gm.meta[LEAF_MODULES] = tuple(sorted(tracer.leaves_seen))
    gm.meta[AUTO_LEAVES] = auto
    gm.meta[EXAMPLE_INPUTS] = inputs
    gm = finish(gm, propagate=False)
    if inputs is not None:
        _check_reproduces(root, gm, inputs)
    return gm


def _trace_with_auto_leaves(root: nn.Module, names: frozenset[str], types: tuple[type, ...]):
    """(tracer, graph, {auto leaf: reason}): trace, making each untraceable submodule a leaf."""
    auto: dict[str, str] = {}
    while True:
        tracer = _Tracer(names | frozenset(auto), types)
        try:
            return tracer, tracer.trace(root), auto
        except Exception as exc:  # any trace failure becomes a leaf or one user-facing line
            failed = tracer.failed_in
            if failed is None or failed[0] in ("", *auto) or len(auto) >= _MAX_AUTO_LEAVES:
                raise IntqError(_trace_failure(root, tracer, exc)) from None
            reason, _ = _reason(exc)
            auto[failed[0]] = f"{failed[1]} {reason}{_user_frame(exc)}"


def _as_inputs(example: Any) -> tuple[torch.Tensor, ...] | None:
    if example is None:
        return None
    inputs = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    if not inputs or not all(isinstance(t, torch.Tensor) for t in inputs):
        raise ValueError("example_input must be a tensor or a non-empty sequence of tensors")
    return tuple(t.detach().clone() for t in inputs)


def _split_leaves(
    model: nn.Module, leaves: Iterable[str | type[nn.Module]]
) -> tuple[frozenset[str], tuple[type, ...]]:
    if isinstance(leaves, str | type):
        leaves = [leaves]
    names = {leaf for leaf in leaves if isinstance(leaf, str)}
    types = tuple(leaf for leaf in leaves if isinstance(leaf, type))
    others = [leaf for leaf in leaves if not isinstance(leaf, str | type)]
    if others:
        raise ValueError(f"leaf_modules takes qualified names or module classes, got {others!r}")
    known = dict(model.named_modules())
    missing = sorted(n for n in names if n not in known or n == "")
    if missing:
        raise IntqError(
            f"leaf_modules: {type(model).__name__} has no submodule named {missing[0]!r}; "
            f"use a qualified name from model.named_modules(), e.g. {_example_names(known)}"
        )
    return frozenset(names), types


def _example_names(known: dict[str, nn.Module]) -> str:
    return ", ".join(repr(n) for n in list(known)[1:4]) or "(the model has no submodules)"


def _eval_copy(model: nn.Module) -> nn.Module:
    try:
        root = copy.deepcopy(model)
    except Exception as exc:  # report why the copy failed, in one line
        raise IntqError(
            f"cannot copy {type(model).__name__} for tracing ({exc}); intq never edits the "
            "user's model, so the model must support copy.deepcopy"
        ) from None
    return root.eval()


class _Tracer(fx.Tracer):
    """fx tracer that honours user leaves and records which module is being traced."""

    def __init__(self, leaf_names: frozenset[str], leaf_types: tuple[type, ...]) -> None:
        super().__init__()
        self.record_stack_traces = True  # node.meta["stack_trace"]: where a float island is
        self.leaf_names = leaf_names
        self.leaf_types = leaf_types
        self.leaves_seen: set[str] = set()
        self.stack: list[tuple[str, str]] = []
        self.failed_in: tuple[str, str] | None = None

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or isinstance(m, self.leaf_types):
            self.leaves_seen.add(module_qualified_name)
            return True
        if isinstance(m, _FUSED):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        self.stack.append((self.path_of_module(m), type(m).__name__))
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_in is None:
                self.failed_in = self.stack[-1]
            raise
        finally:
            self.stack.pop()


def _trace_failure(root: nn.Module, tracer: _Tracer, exc: Exception) -> str:
    reason, rewrite = _reason(exc)
    where = _user_frame(exc)
    model = type(root).__name__
    if tracer.failed_in is None or tracer.failed_in[0] == "":
        return (
            f"cannot trace {model}: {reason} in {model}.forward{where}; move that code into a "
            f"submodule and keep it in float with leaf_modules=['<its qualified name>'], or "
            f"{rewrite}"
        )
    name, cls = tracer.failed_in
    return (
        f"cannot trace {model}: module {name!r} ({cls}) {reason}{where}; mark {name} as a leaf "
        f"with leaf_modules=[{name!r}] to keep it in float, or {rewrite}"
    )


def _reason(exc: Exception) -> tuple[str, str]:
    """(what went wrong, how to rewrite the code) for a trace failure."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "control flow" in text:
        return (
            "uses a traced tensor in Python control flow (if/while/bool/len)",
            "rewrite it without tensor-dependent Python control flow",
        )
    return (
        f"cannot be traced ({type(exc).__name__}: {text})",
        "rewrite it so that torch.fx can trace it (modules created in __init__, no tensor "
        "values used as Python values)",
    )


def _user_frame(exc: Exception) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _is_user_file(f.filename)]
    if not frames:
        return ""
    f = frames[-1]
    code = f" `{f.line.strip()}`" if f.line else ""
    return f" at {os.path.basename(f.filename)}:{f.lineno}{code}"


def _is_user_file(filename: str) -> bool:
    here = os.path.dirname(__file__)
    return not filename.startswith((_TORCH_DIR, here)) and not filename.startswith("<")


def _check_reproduces(
    model: nn.Module, gm: fx.GraphModule, inputs: tuple[torch.Tensor, ...]
) -> None:
    with torch.no_grad():
        want = _pytree.tree_leaves(model(*inputs))
    got = _pytree.tree_leaves(propagate_shapes(gm))
    errors = [_relative_error(g, w) for g, w in zip(got, want, strict=False)]
    if len(got) != len(want) or any(e > _CAPTURE_RTOL for e in errors):
        raise IntqError(
            f"the traced graph of {type(model).__name__} does not reproduce the model on the "
            f"example input (relative errors {errors}); a Python value was baked in at trace "
            "time: keep the module that computes it in float with leaf_modules=[...]"
        )


def _relative_error(got: Any, want: Any) -> float:
    if not isinstance(want, torch.Tensor):
        return 0.0 if got == want else float("inf")
    diff = (got.double() - want.double()).abs().max().item() if want.numel() else 0.0
    scale = want.double().abs().max().item() if want.numel() else 0.0
    return diff / scale if scale > 0 else diff
