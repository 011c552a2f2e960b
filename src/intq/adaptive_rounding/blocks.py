"""AdaRound on a block's output (BRECQ, Li et al. 2021): the layers of a block learn their
rounding together, so a layer can make up for the error of another.

A graph splits into blocks at cut points: nodes after which their value is the only one the
rest of the graph still needs (the end of a residual block, after its add), the activation
quantizer that follows a cut point staying in the block before it. Consecutive
pieces merge until a block holds at least ``min_layers`` conv/linear layers, so a chain
without residuals (stem, first block of a stage) is one block too. Each block learns

    V = argmin  mean_{n,p} Σ_c (B(x̃; W̃(V))_{c,n,p} - B_float(x)_{c,n,p})²  +  λ·Σ_layers f_reg(h(V))

B: the block with activations fake-quantized (straight-through) and its layers' weights
W̃(V) = s·(clamp(floor(W/s) + z + h(V), qmin, qmax) - z) (``rounding``), x̃ its input in the
model quantized so far, x in the float model; Adam on V over random batches of whole images,
the same annealed regularizer and early stop as a single layer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx

from intq.adaptive_rounding.rounding import (
    AdaRoundSettings,
    minimize_with_annealed_regularizer,
    rectified_sigmoid,
    rectified_sigmoid_inverse,
    rounded_weight,
)
from intq.fakequant import Quantizer
from intq.fakequant.ste import param_shape
from intq.graph.fused import apply_activation
from intq.graph.qmodules import QuantConv2d, QuantLinear

__all__ = [
    "BlockResult",
    "block_inputs",
    "float_block_output",
    "layers_of",
    "learn_block_rounding",
    "learned_weight",
    "split_blocks",
]

QuantLayer = QuantConv2d | QuantLinear
_EVAL_IMAGES = 8  # images per chunk when scoring a whole block


def split_blocks(gm: fx.GraphModule, min_layers: int) -> list[list[fx.Node]]:
    """The graph's nodes in order, cut into blocks (module docstring); the last block ends
    with the output node."""
    last_use = {}
    for position, node in enumerate(gm.graph.nodes):
        for used in node.all_input_nodes:
            last_use[used] = position
    nodes = list(gm.graph.nodes)
    blocks, block, layers, live = [], [], 0, set()
    for position, node in enumerate(nodes):
        block.append(node)
        layers += _layer(gm, node) is not None
        live = {n for n in live | {node} if last_use.get(n, -1) > position}
        if layers >= min_layers and live == {node} and not _quantizes(gm, nodes, position + 1):
            blocks.append(block)
            block, layers = [], 0
    if block:
        blocks.append(block)
    return blocks


def _quantizes(gm: fx.GraphModule, nodes: list[fx.Node], position: int) -> bool:
    """True when ``nodes[position]`` is a call of an activation quantizer."""
    if position >= len(nodes) or nodes[position].op != "call_module":
        return False
    return isinstance(gm.get_submodule(nodes[position].target), Quantizer)


@dataclass
class _Variables:
    """One layer's rounding problem in its weight's own shape: floor(W/s), the remainder,
    scale and zero point broadcast along the output channels, the grid, and V."""

    floor: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    v: torch.Tensor

    def weight(self, h: torch.Tensor) -> torch.Tensor:
        return rounded_weight(self.floor, h, self.scale, self.zero_point, self.qmin, self.qmax)


@dataclass(frozen=True)
class BlockResult:
    """The learned rounding ``up`` per layer (by node target), the steps run, and the block
    output error (mean over images and positions of the squared error summed over channels)
    with nearest and with learned rounding on all the images."""

    up: dict[str, torch.Tensor]
    steps: int
    nearest_error: float
    learned_error: float


class _BlockInterpreter(fx.Interpreter):
    """Runs a block's nodes on given input values; layers in ``weights`` use that weight."""

    def __init__(self, gm: fx.GraphModule, weights: dict[str, torch.Tensor]) -> None:
        super().__init__(gm, garbage_collect_values=False)
        self.weights = weights

    def run_block(self, block: list[fx.Node], inputs: dict[fx.Node, torch.Tensor]):
        self.env = dict(inputs)
        for node in block:
            self.env[node] = self.run_node(node)
        return self.env[block[-1]]

    def call_module(self, target, args, kwargs):
        weight = self.weights.get(target)
        if weight is None:
            return super().call_module(target, args, kwargs)
        layer = self.module.get_submodule(target)
        bias = layer.simulated_bias()
        if isinstance(layer, QuantLinear):
            y = F.linear(args[0], weight, bias)
        else:
            c = layer.layer
            y = F.conv2d(args[0], weight, bias, c.stride, c.padding, c.dilation, c.groups)
        return apply_activation(y, layer.activation)


def block_inputs(block: list[fx.Node]) -> list[fx.Node]:
    """The nodes outside ``block`` whose values it reads."""
    inside = set(block)
    seen: dict[fx.Node, None] = {}
    for node in block:
        for used in node.all_input_nodes:
            if used not in inside:
                seen[used] = None
    return list(seen)


def learn_block_rounding(gm: fx.GraphModule, block: list[fx.Node],
                         quantized_inputs: dict[fx.Node, torch.Tensor],
                         target: torch.Tensor, settings: AdaRoundSettings,
                         generator: torch.Generator) -> BlockResult:
    """Learn the rounding of the block's layers (module docstring): ``quantized_inputs``
    maps each of ``block_inputs(block)`` to its value on all images in the quantized model,
    ``target`` is the float block's output on them."""
    layers = {node.target: layer for node, layer in layers_of(gm, block)}
    variables = {name: _variables(layer) for name, layer in layers.items()}
    optimizer = torch.optim.Adam([v.v for v in variables.values()], lr=settings.lr)
    count = len(target)

    def reconstruction() -> tuple[torch.Tensor, list[torch.Tensor]]:
        pick = torch.randint(count, (min(settings.batch_images, count),), generator=generator)
        hs = {name: rectified_sigmoid(v.v) for name, v in variables.items()}
        weights = {name: v.weight(hs[name]) for name, v in variables.items()}
        output = _BlockInterpreter(gm, weights).run_block(
            block, {n: value[pick] for n, value in quantized_inputs.items()})
        return _squared_error(output, target[pick]), list(hs.values())

    steps = minimize_with_annealed_regularizer(
        reconstruction, [v.v for v in variables.values()], optimizer, settings)
    up = {name: rectified_sigmoid(v.v.detach()) >= 0.5 for name, v in variables.items()}
    nearest = {name: layer.weight_quantizer(_float_weight(layer)).detach()
               for name, layer in layers.items()}
    learned = {name: v.weight(up[name].float()) for name, v in variables.items()}
    return BlockResult(up, steps, _block_error(gm, block, quantized_inputs, target, nearest),
                       _block_error(gm, block, quantized_inputs, target, learned))


def float_block_output(gm: fx.GraphModule, block: list[fx.Node],
                       inputs: dict[fx.Node, torch.Tensor]) -> torch.Tensor:
    """The block's output on ``inputs`` (all images, a few at a time) as the graph's
    quantizers are now set (the caller switches fake quantization off for the float one)."""
    count = len(next(iter(inputs.values())))
    interpreter = _BlockInterpreter(gm, {})
    with torch.no_grad():
        return torch.cat([
            interpreter.run_block(block, {n: v[start:start + _EVAL_IMAGES]
                                          for n, v in inputs.items()})
            for start in range(0, count, _EVAL_IMAGES)
        ])


def learned_weight(layer: QuantLayer, up: torch.Tensor) -> torch.Tensor:
    """W̃ of ``layer`` for the hard rounding ``up`` (ceil where True, floor elsewhere)."""
    return _variables(layer).weight(up.float()).detach()


def _variables(layer: QuantLayer) -> _Variables:
    weight = _float_weight(layer)
    wq = layer.weight_quantizer
    shape = param_shape(weight.dim(), 0) if wq.scale.numel() > 1 else (1,) * weight.dim()
    scale = wq.scale.reshape(shape).float()
    zero_point = wq.zero_point.reshape(shape).float()
    ratio = weight / scale
    floor = torch.floor(ratio)
    remainder = (ratio - floor).clamp(0.0, 1.0 - 1e-6)
    v = rectified_sigmoid_inverse(remainder).requires_grad_()
    return _Variables(floor, scale, zero_point, wq.spec.qmin, wq.spec.qmax, v)


def _float_weight(layer: QuantLayer) -> torch.Tensor:
    return getattr(layer, "float_weight", layer.layer.weight).detach()


def _layer(gm: fx.GraphModule, node: fx.Node) -> QuantLayer | None:
    if node.op != "call_module":
        return None
    module = gm.get_submodule(node.target)
    return module if isinstance(module, QuantConv2d | QuantLinear) else None


def _squared_error(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over images and positions of the squared error summed over channels (dim 1)."""
    diff = (output - target).pow(2)
    return diff.sum(dim=1).mean() if diff.dim() > 1 else diff.mean()


def _block_error(gm: fx.GraphModule, block: list[fx.Node],
                 inputs: dict[fx.Node, torch.Tensor], target: torch.Tensor,
                 weights: dict[str, torch.Tensor]) -> float:
    total = 0.0
    interpreter = _BlockInterpreter(gm, weights)
    with torch.no_grad():
        for start in range(0, len(target), _EVAL_IMAGES):
            chunk = slice(start, start + _EVAL_IMAGES)
            output = interpreter.run_block(block, {n: v[chunk] for n, v in inputs.items()})
            total += float(_squared_error(output, target[chunk]).double()) * len(output)
    return total / len(target)


def layers_of(gm: fx.GraphModule, block: Iterable[fx.Node]) -> list[tuple[fx.Node, QuantLayer]]:
    """The block's conv/linear layers with their nodes, in order."""
    return [(node, layer) for node in block if (layer := _layer(gm, node)) is not None]
