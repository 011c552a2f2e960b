"""Prepare a trained float model for quantization-aware training, and convert it afterwards.

    qgm = prepare_qat(model, x[:2], recipe="sym-per-channel-8")   # training-mode fx module
    ... train qgm with apply_schedule(qgm, schedule, step) before each step ...
    deployable = convert_qat(qgm)              # -> intq.convert.from_graph.convert_to_program

``prepare_qat`` = capture -> normalize -> fuse without folding BN -> cross-layer
equalization if ``recipe.equalize`` (through the BNs' γ and β) -> place the recipe's
quantizers (``intq.graph.place``) -> every conv followed by a BN becomes a ``QATConvBn2d``
(BN folded for training, PAPER.md 3). Weight quantizers use the current min/max of the
(folded) weights at every step; activation quantizers use the EMA of batch min/max with
decay 0.999 (``qat_activation_spec``), whatever observer the recipe names. A model without
BN simply gets no ``QATConvBn2d``. The ReLU/ReLU6 of a ``QATConvBn2d`` whose output goes
only to its activation quantizer moves into that quantizer (``move_activation_into``: one
clamp for both, forward and backward). ``convert_qat`` replaces each ``QATConvBn2d`` by the
``QuantConv2d`` with the inference-folded weights (activation back inside) and freezes every
quantizer, so the PTQ converter and exporters apply unchanged.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable

import torch
from torch import fx, nn

from intq.errors import IntqError
from intq.fakequant import Quantizer, QuantSpec
from intq.graph import (
    capture,
    cross_layer_equalize,
    fold_batchnorm,
    fuse,
    normalize,
    relu6_preactivation_peaks,
)
from intq.graph.fused import FusedConv2d
from intq.graph.place import activation_quantizers, place_quantizers, quant_layers
from intq.graph.qmodules import QuantConv2d
from intq.ptq import widen_weight_scales_for_int32_bias
from intq.qat.bn_fold import QATConvBn2d
from intq.recipes import DEFAULT_RECIPE, Recipe, get_recipe

__all__ = ["EMA_DECAY", "convert_qat", "prepare_qat", "qat_layers", "qat_recipe"]

EMA_DECAY = 0.999


def prepare_qat(
    model: nn.Module,
    example_input: torch.Tensor,
    recipe: Recipe | str = DEFAULT_RECIPE,
    *,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    correction: bool = True,
    exact_batch_stats: bool = False,
) -> fx.GraphModule:
    """The QAT graph of ``model`` (not modified), in training mode, starting from its weights.

    ``correction=False`` folds BN naively with batch statistics (for comparison only);
    ``exact_batch_stats=True`` takes the batch statistics from a float conv as the paper's
    training graph does (a second conv per layer; see ``intq.qat.bn_fold``).
    For several processes, pass the result to ``intq.qat.distributed.make_distributed``.
    """
    recipe = qat_recipe(get_recipe(recipe) if isinstance(recipe, str) else recipe)
    gm = fuse(normalize(capture(model, example_input, leaf_modules=leaf_modules)))
    if recipe.equalize:  # BNs still inside: output channels scale through γ and β
        peaks = relu6_preactivation_peaks(gm, [example_input])
        gm, _ = cross_layer_equalize(gm, relu6_peaks=peaks)
    batchnorms = _take_conv_batchnorms(gm)
    qgm = place_quantizers(fold_batchnorm(gm), recipe)
    for name, bn in batchnorms.items():
        module = qgm.get_submodule(name)
        if isinstance(module, QuantConv2d):
            layer = QATConvBn2d(module.layer, bn, module.activation, module.weight_quantizer,
                                correction=correction, exact_batch_stats=exact_batch_stats)
            layer.bind_input_quantizer(module.input_quantizer)
            qgm.add_submodule(name, layer)
        else:  # kept in float by the recipe: give the BN back
            module.bn = bn
    _move_activations_into_quantizers(qgm)
    for _name, layer in qat_layers(qgm):
        layer.weight_quantizer.current_ranges = True
    for _name, quantizer in activation_quantizers(qgm):
        quantizer.observe_in_eval = False  # evaluating mid-training leaves the ranges alone
    return qgm.train()


def qat_recipe(recipe: Recipe, decay: float = EMA_DECAY) -> Recipe:
    """``recipe`` with QAT observers: min/max of the current weights, EMA of activations."""

    def weight(spec: QuantSpec | None) -> QuantSpec | None:
        return spec and dataclasses.replace(spec, observer="minmax", observer_options=())

    def activation(spec: QuantSpec | None) -> QuantSpec | None:
        return spec and dataclasses.replace(spec, observer="ema",
                                            observer_options=(("decay", decay),))

    overrides = tuple(
        dataclasses.replace(o, weight=weight(o.weight), activation=activation(o.activation))
        for o in recipe.overrides
    )
    return dataclasses.replace(recipe, name=f"{recipe.name}-qat", weight=weight(recipe.weight),
                               activation=activation(recipe.activation), overrides=overrides)


def qat_layers(qgm: fx.GraphModule):
    """``(name, module)`` of every weight-quantized layer: QATConvBn2d, QuantConv2d, QuantLinear."""
    for name, module in qgm.named_modules():
        if isinstance(module, QATConvBn2d):
            yield name, module
    yield from quant_layers(qgm)


@torch.no_grad()
def convert_qat(qgm: fx.GraphModule) -> fx.GraphModule:
    """A frozen, eval-mode copy of the trained QAT graph ``qgm`` for ``convert_to_program``:
    BN-folding layers become ``QuantConv2d`` with the inference-folded weights, weight
    quantizers are frozen on the final weights (a learned scale baked in), activation ranges
    on their EMA."""
    out = copy.deepcopy(qgm).eval()
    for name, module in list(out.named_modules()):
        if isinstance(module, QATConvBn2d):
            module.restore_activation()
            out.add_submodule(name, module.to_quant_conv())
    for name, layer in quant_layers(out):
        layer.weight_quantizer.bake_scale()
        _freeze_on(layer.weight_quantizer, layer.layer.weight.detach(), f"weights of {name}")
    for name, quantizer in activation_quantizers(out):
        if not quantizer.observer.has_data and not quantizer.has_qparams:
            raise IntqError(f"activation quantizer {name} saw no data; train at least one "
                            "step before converting")
        quantizer.frozen = True
        quantizer.observe, quantizer.fake_quant = False, True
    widen_weight_scales_for_int32_bias(out)
    return out


def _move_activations_into_quantizers(qgm: fx.GraphModule) -> None:
    """Each QATConvBn2d with an activation whose output feeds only a quantizer that quantizes
    nothing else hands the activation to that quantizer."""
    calls: dict[str, int] = {}
    for node in qgm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    for node in qgm.graph.nodes:
        layer = qgm.get_submodule(node.target) if node.op == "call_module" else None
        if not isinstance(layer, QATConvBn2d) or layer.activation is None or len(node.users) != 1:
            continue
        (user,) = node.users
        quantizer = qgm.get_submodule(user.target) if user.op == "call_module" else None
        if isinstance(quantizer, Quantizer) and calls[user.target] == 1:
            layer.move_activation_into(quantizer)


def _take_conv_batchnorms(gm: fx.GraphModule) -> dict[str, nn.BatchNorm2d]:
    """Detach the BN of every fused conv (placement wants folded layers); by node target."""
    taken = {}
    for node in gm.graph.nodes:
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, FusedConv2d) and module.bn is not None:
            taken[str(node.target)] = module.bn
            module.bn = None
    return taken


def _freeze_on(quantizer: Quantizer, weight: torch.Tensor, where: str) -> None:
    if not quantizer.frozen:
        quantizer.observer.reset()
        quantizer.observer.update(weight)
        quantizer.calculate_qparams()
    if not quantizer.has_qparams:
        raise IntqError(f"the {where} quantizer has no qparams")
    quantizer.observe, quantizer.frozen, quantizer.fake_quant = False, True, True
