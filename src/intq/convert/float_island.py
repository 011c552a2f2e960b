"""Float islands: one graph node without an integer form, as a small ONNX model.

`island_model(gm, node)` cuts `node` out of the quantized graph with everything it needs that
is not a tensor (the tuple a `getitem` reads from, shape arithmetic, parameters and
submodules): every tensor it reads becomes an input, in the order returned. The cut is
exported with torch.onnx (TorchScript exporter, batch dimension dynamic) and checked against
torch on the example shapes. The integer program carries it as a `FloatSubgraph`: ONNX
Runtime runs it inside the exported model, the reference interpreter runs it on its own.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from intq.graph._fx import is_tensor, shape_of
from intq.graph.kinds import is_constant_expression

__all__ = ["Island", "cut_node", "island_model"]

_OPSET = 20  # the TorchScript exporter's newest; the ONNX writer converts it to its own
_CHECK_RTOL = 1e-4


@dataclass(frozen=True)
class Island:
    """An exported float node: ONNX bytes, the tensor nodes it reads, its output shape."""

    model: bytes
    inputs: tuple[fx.Node, ...]
    output_shape: tuple[int | None, ...] | None


def island_model(gm: fx.GraphModule, node: fx.Node) -> Island:
    """The float island computing `node` (see the module docstring); raises ValueError with the
    exporter's reason when torch.onnx cannot export it or it does not reproduce torch."""
    sub, inputs = cut_node(gm, node)
    examples = tuple(_example(n) for n in inputs)
    with torch.no_grad():
        want = sub(*examples)
    if not isinstance(want, torch.Tensor) or not want.is_floating_point():
        raise ValueError("it does not return one float tensor")
    model = _export(sub, examples, len(inputs))
    _check(model, sub, examples)
    shape = shape_of(node)
    return Island(model, tuple(inputs), None if shape is None else (None, *shape[1:]))


def cut_node(gm: fx.GraphModule, node: fx.Node) -> tuple[fx.GraphModule, list[fx.Node]]:
    """`node` as a GraphModule of its tensor inputs (returned in argument order), with the
    non-tensor nodes, parameters and submodules it needs."""
    graph = fx.Graph()
    owners: dict[str, object] = {}
    env: dict[fx.Node, fx.Node] = {}
    inputs: list[fx.Node] = []

    def copy(n: fx.Node) -> fx.Node:
        if n in env:
            return env[n]
        if n is not node and (n.op == "placeholder" or is_tensor(gm, n)) and not (
                is_constant_expression(n)):
            env[n] = graph.placeholder(f"input{len(inputs)}")
            inputs.append(n)
            return env[n]
        if n.op == "placeholder":
            raise ValueError(f"it reads the non-tensor graph input {n.name}")
        if n.op in ("get_attr", "call_module"):
            owners[n.target] = _attribute(gm, n.target)
        env[n] = graph.node_copy(n, copy)
        return env[n]

    graph.output(copy(node))
    # eval: torch.onnx.export restores the root's mode on every submodule afterwards, and
    # the submodules are the quantized graph's own
    return fx.GraphModule(owners, graph).eval(), inputs


def _attribute(gm: fx.GraphModule, target: str):
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    return value


def _example(n: fx.Node) -> torch.Tensor:
    shape = shape_of(n)
    if shape is None:
        raise ValueError(f"the shape of its input {n.name} is unknown (capture with an example "
                         "input)")
    dtype = n.meta["tensor_meta"].dtype
    if dtype.is_floating_point:
        return torch.randn(shape).to(dtype)
    return torch.zeros(shape, dtype=dtype)


def _export(sub: fx.GraphModule, examples: tuple[torch.Tensor, ...], count: int) -> bytes:
    names = [f"input{i}" for i in range(count)]
    dynamic = {name: {0: "batch"} for name in [*names, "output"]}
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(sub, examples, buffer, input_names=names, output_names=["output"],
                              dynamic_axes=dynamic, opset_version=_OPSET, dynamo=False,
                              do_constant_folding=True)
        except Exception as exc:  # noqa: BLE001 - any exporter failure is reported as one line
            text = str(exc).strip().splitlines()
            reason = text[0] if text else repr(exc)
            raise ValueError(f"torch.onnx cannot export it ({reason})") from None
    return buffer.getvalue()


def _check(model: bytes, sub: fx.GraphModule, examples: tuple[torch.Tensor, ...]) -> None:
    """The export equals torch on the example and on its negation (a branch on the data's
    sign or mean that tracing froze shows up on one of them)."""
    for inputs in (examples, tuple(-e if e.is_floating_point() else e for e in examples)):
        with torch.no_grad():
            want = sub(*inputs)
        _check_once(model, inputs, want)


def _check_once(model: bytes, examples: tuple[torch.Tensor, ...], want: torch.Tensor) -> None:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        feeds = {i.name: e.numpy() for i, e in zip(session.get_inputs(), examples, strict=True)}
        got = session.run(None, feeds)[0]
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        text = str(exc).strip().splitlines()
        raise ValueError(f"ONNX Runtime cannot run its export ({text[0] if text else exc!r})"
                         ) from None
    want = want.numpy()
    scale = float(np.abs(want).max(initial=0.0)) or 1.0
    if got.shape != want.shape or float(np.abs(got - want).max(initial=0.0)) > _CHECK_RTOL * scale:
        raise ValueError("its ONNX export does not reproduce torch (tracing froze a "
                         "data-dependent branch or a Python value)")
