"""Run a graph one node at a time, twice side by side: the quantized model and the float model.

AdaRound needs, at each layer, the layer's input in the model quantized so far and in the
float model. Stepping through the graph node by node on a fixed set of samples computes every
node once per model (instead of one forward pass up to each layer): the caller rounds a layer
between reading its inputs and stepping over it. The float model is the same graph with every
quantizer's fake quantization off (``QuantConv2d.quantized_weight`` then returns the float
weight and ``simulated_bias`` the float bias). Values are freed after their last use.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import fx

from intq.fakequant import Quantizer

__all__ = ["GraphStreams"]


class GraphStreams:
    """The quantized and the float model's values of each node of ``gm`` on the samples ``x``,
    computed one node at a time by ``step``."""

    def __init__(self, gm: fx.GraphModule, x: torch.Tensor) -> None:
        self.gm = gm
        self.quantizers = [m for m in gm.modules() if isinstance(m, Quantizer)]
        self._streams = {}
        for quantized in (True, False):
            interpreter = fx.Interpreter(gm, garbage_collect_values=False)
            interpreter.args_iter = iter([x])
            self._streams[quantized] = interpreter
        self._last_uses = _last_uses(gm.graph)

    def inputs(self, node: fx.Node) -> tuple[torch.Tensor, torch.Tensor]:
        """(quantized, float) value of ``node``'s first argument (computed already)."""
        return self.value(node.args[0], True), self.value(node.args[0], False)

    def value(self, node: fx.Node, quantized: bool) -> torch.Tensor:
        """The value of ``node`` (computed already) in the quantized or the float model."""
        return self._streams[quantized].env[node]

    def step(self, node: fx.Node) -> None:
        """Compute ``node`` in both models and free the values it used last."""
        for quantized, interpreter in self._streams.items():
            with self.fake_quant(quantized), torch.no_grad():
                interpreter.env[node] = interpreter.run_node(node)
            for dead in self._last_uses.get(node, ()):
                del interpreter.env[dead]

    @contextmanager
    def fake_quant(self, enabled: bool) -> Iterator[None]:
        """Every quantizer's fake quantization on (the quantized model) or off (float)."""
        changed = [q for q in self.quantizers if q.fake_quant != enabled]
        for q in changed:
            q.fake_quant = enabled
        try:
            yield
        finally:
            for q in changed:
                q.fake_quant = not enabled


def _last_uses(graph: fx.Graph) -> dict[fx.Node, list[fx.Node]]:
    """node -> the nodes whose value is read for the last time by it."""
    last_user: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        for used in node.all_input_nodes:
            last_user[used] = node
    uses: dict[fx.Node, list[fx.Node]] = {}
    for used, user in last_user.items():
        uses.setdefault(user, []).append(used)
    return uses
