"""The calibration pass of a prepared graph, run in ONNX Runtime instead of eager PyTorch.

During activation calibration (``intq.ptq.calibrate``) the graph runs with its weights
fake-quantized (their quantizers are frozen) and its activation quantizers observing, i.e.
passing values through unchanged. From each batch the calibration needs only what the
observers and the bias-correction input means extract. ``OrtCalibrationPass`` exports that
computation to ONNX once:

- every QuantConv2d/QuantLinear becomes a float FusedConv2d/FusedLinear whose weights are
  its fake-quantized weights and whose bias is the one it uses now (``simulated_bias()``);
- every activation quantizer becomes the identity, and the tensor entering it is summarized
  in the graph for its observer (``Observer.update_summary``): min and max over the whole
  tensor, plus every s-th value of the flattened tensor when the observer asks for values
  (s from ``Observer.sample_stride`` for a full batch; a per-channel observer gets the
  tensor itself);
- the tensor entering a quantized layer is reduced to per-channel sums for its input mean.

ONNX Runtime computes these in its own threads, and only the summaries leave it: several
times faster than eager PyTorch (depthwise convolutions) and than handing over every
activation. The values equal the eager ones to float32 rounding (another summation order);
the last, smaller batch is sampled with the stride of a full one.
"""

from __future__ import annotations

import io
import operator
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from intq.fakequant import Quantizer
from intq.graph._fx import copy_graph_module, shape_of
from intq.graph.bias_correction import InputMeans
from intq.graph.fused import FusedConv2d, FusedLinear
from intq.graph.kinds import OpKind, op_kind
from intq.graph.qmodules import QuantConv2d, QuantLinear
from intq.observers import Observer
from intq.threads import single_intra_op_thread

__all__ = ["OrtCalibrationPass"]

_INPUT = -1  # "output index" of the graph input, which the caller already holds
_Output = Callable[[fx.Node, str, Callable[[], fx.Node]], int]
"""output(source, kind, make): index of graph output ``kind`` of ``source`` (made if new)."""


@dataclass(frozen=True)
class _QuantizerTap:
    """What enters quantizer ``target`` at one call: the whole tensor (output ``tensor``),
    or its ``minimum``/``maximum`` and every ``stride``-th value (``sample``, None when the
    observer needs no values)."""

    target: str
    tensor: int | None = None
    minimum: int | None = None
    maximum: int | None = None
    sample: int | None = None
    stride: int = 0


@dataclass(frozen=True)
class _LayerTap:
    """What enters layer ``target``: per-channel sums (output ``sums``) over ``positions``
    values per channel and sample, or the whole tensor (output ``tensor``)."""

    target: str
    sums: int | None = None
    positions: int = 0
    tensor: int | None = None


class OrtCalibrationPass:
    """``qgm``'s calibration forward pass as an ONNX Runtime session, for batches of
    ``batch_size`` (smaller ones run too). ``observe(x, qgm, means)`` runs one batch and feeds
    the quantizers of ``qgm`` and the ``means`` (layer name -> InputMeans).

    Raises whatever ``torch.onnx.export`` raises for a graph it cannot export (e.g. an
    arbitrary float fallback module).
    """

    def __init__(self, qgm: fx.GraphModule, example_input: torch.Tensor, batch_size: int) -> None:
        import onnxruntime as ort  # here, not at import: it logs on import for some users

        gm, self._quantizer_taps, self._layer_taps, count = _summary_graph(qgm, batch_size)
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

    @torch.no_grad()
    def observe(self, x: torch.Tensor, qgm: fx.GraphModule, means: dict[str, InputMeans]) -> None:
        """Run batch ``x``; feed every quantizer call (in graph order, as the eager pass
        would) and the input means of the layers in ``means``. The feeding works on samples
        and reductions, small tensors: one intra-op thread (``intq.threads``)."""
        x = x.detach().float().contiguous()
        outputs = [torch.from_numpy(out) for out in
                   self._session.run(None, {"input": x.numpy()})]
        with single_intra_op_thread():
            self._feed(x, outputs, qgm, means)

    def _feed(self, x: torch.Tensor, outputs: list[torch.Tensor], qgm: fx.GraphModule,
              means: dict[str, InputMeans]) -> None:
        def value(index: int | None) -> torch.Tensor | None:
            return None if index is None else x if index == _INPUT else outputs[index]

        for tap in self._quantizer_taps:
            quantizer = qgm.get_submodule(tap.target)
            if tap.tensor is not None:
                quantizer(value(tap.tensor))
            else:
                sample = value(tap.sample)
                quantizer.observe_summary(
                    value(tap.minimum).reshape(1), value(tap.maximum).reshape(1),
                    None if sample is None else sample.reshape(1, -1), tap.stride,
                )
        for tap in self._layer_taps:
            if tap.target not in means:
                continue
            if tap.tensor is not None:
                means[tap.target].add(value(tap.tensor))
            else:
                means[tap.target].add_sums(value(tap.sums).double(), len(x) * tap.positions)


def _summary_graph(
    qgm: fx.GraphModule, batch_size: int
) -> tuple[fx.GraphModule, list[_QuantizerTap], list[_LayerTap], int]:
    """A copy of ``qgm`` computing the calibration pass, whose outputs are the summaries; the
    taps say which output is what, and the last item is the number of outputs."""
    gm = copy_graph_module(qgm)
    graph = gm.graph
    outputs: dict[tuple[fx.Node, str], tuple[int, fx.Node]] = {}  # in index order

    def output(source: fx.Node, kind: str, make: Callable[[], fx.Node]) -> int:
        """Index of graph output ``kind`` of ``source``, adding it (``make()``) if new."""
        if source.op == "placeholder":
            return _INPUT
        if (source, kind) not in outputs:
            with graph.inserting_after(source):
                outputs[(source, kind)] = (len(outputs), make())
        return outputs[(source, kind)][0]

    quantizer_taps, layer_taps = [], []
    for node in list(graph.nodes):
        if node.op != "call_module":
            continue
        module = gm.get_submodule(node.target)
        if isinstance(module, Quantizer):
            quantizer_taps.append(_quantizer_tap(graph, node, module.observer, batch_size,
                                                 output))
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif isinstance(module, QuantConv2d | QuantLinear):
            layer_taps.append(_layer_tap(gm, node, output))
            _set_submodule(gm, node.target, _frozen_float_layer(module))
    out = next(n for n in graph.nodes if n.op == "output")
    out.args = (tuple(n for _, n in outputs.values()),)
    graph.eliminate_dead_code()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm, quantizer_taps, layer_taps, len(outputs)


def _quantizer_tap(graph: fx.Graph, node: fx.Node, observer: Observer, batch_size: int,
                   output: _Output) -> _QuantizerTap:
    source = node.args[0]
    shape = shape_of(source)
    if source.op == "placeholder" or observer.per_channel or not shape:
        return _QuantizerTap(node.target, tensor=output(source, "tensor", lambda: source))
    per_sample = int(np.prod(shape[1:], dtype=np.int64))
    stride = observer.sample_stride(batch_size * per_sample)
    minimum = output(source, "min", lambda: graph.call_function(torch.min, (source,)))
    maximum = output(source, "max", lambda: graph.call_function(torch.max, (source,)))
    sample = None
    if stride:
        def strided():
            flat = graph.call_method("reshape", (source, -1))
            with graph.inserting_after(flat):
                return graph.call_function(operator.getitem, (flat, slice(None, None, stride)))
        sample = output(source, f"sample/{stride}", strided)
    return _QuantizerTap(node.target, minimum=minimum, maximum=maximum, sample=sample,
                         stride=stride)


def _layer_tap(gm: fx.GraphModule, node: fx.Node, output: _Output) -> _LayerTap:
    """Sums of the layer input over batch and positions. A zero pad before the layer adds
    positions but nothing to the sums, so they are taken before it: a pad that feeds only
    the conv is fused into it by ONNX Runtime."""
    source = node.args[0]
    shape = shape_of(source) or ()
    if source.op == "placeholder" or len(shape) not in (2, 4):
        return _LayerTap(node.target, tensor=output(source, "tensor", lambda: source))
    dims, positions = ((0, 2, 3), shape[2] * shape[3]) if len(shape) == 4 else ((0,), 1)
    while op_kind(gm, source) == OpKind.PAD and source.args[0].op != "placeholder":
        source = source.args[0]
    sums = output(source, "sums", lambda: gm.graph.call_method("sum", (source, dims)))
    return _LayerTap(node.target, sums=sums, positions=positions)


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
