"""The calibration pass of a prepared graph, run in ONNX Runtime instead of eager PyTorch.

During activation calibration (``intq.ptq.calibrate``) the graph runs with its weights
fake-quantized (their quantizers are frozen) and its activation quantizers observing, i.e.
passing values through unchanged. What the calibration needs from each batch is only the
tensors entering every activation quantizer (for the observers) and every quantized layer
(for the bias-correction input means). ``OrtCalibrationPass`` exports exactly that
computation to ONNX once:

- every QuantConv2d/QuantLinear becomes a float FusedConv2d/FusedLinear whose weights are
  its fake-quantized weights and whose bias is the one it uses now (``simulated_bias()``);
- every activation quantizer becomes the identity;
- the graph outputs are the tapped tensors (a tap on the graph input is served from the
  input itself).

ONNX Runtime then runs the batches with its own threads, several times faster than eager
PyTorch on depthwise convolutions. The tapped values equal the eager ones to float32
rounding (a different summation order).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from torch import fx, nn

from intq.fakequant import Quantizer
from intq.graph._fx import copy_graph_module
from intq.graph.fused import FusedConv2d, FusedLinear
from intq.graph.qmodules import QuantConv2d, QuantLinear

__all__ = ["OrtCalibrationPass", "Tap", "tapped"]

_INPUT = -1  # tap index of the graph input


@dataclass(frozen=True)
class Tap:
    """The tensor entering module ``target`` (a quantizer or a quantized layer) at one call:
    output ``index`` of the ONNX graph, or the graph input when ``index`` is -1."""

    target: str
    index: int


class OrtCalibrationPass:
    """``qgm``'s calibration forward pass as an ONNX Runtime session.

    ``quantizer_taps`` / ``layer_taps`` list, in graph order, what enters each activation
    quantizer call and each quantized layer; ``run(x)`` returns the tapped tensors of one
    batch, indexed like the ONNX outputs. Raises whatever ``torch.onnx.export`` raises for a
    graph it cannot export (e.g. an arbitrary float fallback module).
    """

    def __init__(self, qgm: fx.GraphModule, example_input: torch.Tensor) -> None:
        gm, self.quantizer_taps, self.layer_taps = _tapped_float_graph(qgm)
        count = 1 + max(tap.index for tap in (*self.quantizer_taps, *self.layer_taps))
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about python values in the graph
            torch.onnx.export(
                gm, (example_input[:1],), buffer, input_names=["input"],
                output_names=[f"tap{i}" for i in range(count)],
                dynamic_axes={"input": {0: "batch"}}, opset_version=17, dynamo=False,
            )
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def run(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The tapped tensors of batch ``x``; ``tapped(result, tap)`` picks one."""
        outputs = self._session.run(None, {"input": np.ascontiguousarray(x.numpy())})
        return [torch.from_numpy(out) for out in outputs]


def tapped(outputs: list[torch.Tensor], x: torch.Tensor, tap: Tap) -> torch.Tensor:
    """The tensor of ``tap`` among the ``run(x)`` outputs (the input itself for index -1)."""
    return x if tap.index == _INPUT else outputs[tap.index]


def _tapped_float_graph(
    qgm: fx.GraphModule,
) -> tuple[fx.GraphModule, list[Tap], list[Tap]]:
    """A copy of ``qgm`` computing the calibration pass, whose outputs are the tapped tensors."""
    gm = copy_graph_module(qgm)
    outputs: dict[fx.Node, int] = {}

    def tap(node: fx.Node) -> int:
        if node.op == "placeholder":
            return _INPUT
        return outputs.setdefault(node, len(outputs))

    quantizer_taps, layer_taps = [], []
    for node in list(gm.graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, Quantizer):
            source = node.args[0]
            quantizer_taps.append(Tap(node.target, tap(source)))
            node.replace_all_uses_with(source)
            gm.graph.erase_node(node)
        elif isinstance(module, QuantConv2d | QuantLinear):
            layer_taps.append(Tap(node.target, tap(node.args[0])))
            _set_submodule(gm, node.target, _frozen_float_layer(module))
    output = next(n for n in gm.graph.nodes if n.op == "output")
    output.args = (tuple(outputs),)
    gm.graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, quantizer_taps, layer_taps


@torch.no_grad()
def _frozen_float_layer(layer: QuantConv2d | QuantLinear) -> FusedConv2d | FusedLinear:
    """The float layer computing what ``layer`` computes now (``layer`` belongs to a copy and is
    reused): its fake-quantized weights and current bias as plain parameters."""
    weight, bias = layer.quantized_weight().detach(), layer.simulated_bias()
    inner = layer.layer
    inner.weight = nn.Parameter(weight)
    inner.bias = None if bias is None else nn.Parameter(bias.detach().clone())
    fused = FusedConv2d if isinstance(layer, QuantConv2d) else FusedLinear
    return fused(inner, None, layer.activation)


def _set_submodule(gm: fx.GraphModule, target: str, module: nn.Module) -> None:
    parent, _, name = target.rpartition(".")
    setattr(gm.get_submodule(parent) if parent else gm, name, module)
