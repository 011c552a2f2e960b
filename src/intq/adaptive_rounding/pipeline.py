"""AdaRound over a calibrated graph, layer by layer in graph order, and PTQ with it.

For each conv/linear layer in turn: sample input patches at random output positions of the
calibration images, once from the model quantized so far (the layers before it already
rounded, activations fake-quantized) and once from the float model; learn the rounding
(``rounding.learn_rounding``) that makes ``f(W̃·x̃ + b)`` reproduce ``f(W·x + b)``; keep it only
if it reconstructs at least as well as rounding to nearest on all sampled columns; write
``W̃`` (on the weight grid) into the layer, keeping the float weight as ``float_weight``.
With ``bias_correction`` the layer's bias then absorbs the mean pre-activation error on the
same columns (empirical bias correction, the inputs from the quantized model):
``b += mean_m(W·x_m + b_float - W̃·x̃_m - b)``.
With ``settings.granularity == "block"`` the layers of each block learn their rounding
together on the block's output (``blocks``), and the bias correction follows layer by layer.

The graph given is never modified: the work happens on a copy, returned when every layer is
done, so an interrupted run (Ctrl-C) leaves nothing half-rounded.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import fx, nn

from intq.adaptive_rounding.blocks import (
    block_inputs,
    float_block_output,
    layers_of,
    learn_block_rounding,
    learned_weight,
    split_blocks,
)
from intq.adaptive_rounding.columns import (
    columns_at,
    grouped_weight,
    layer_groups,
    patch_rows,
    sample_columns,
    ungrouped_weight,
)
from intq.adaptive_rounding.rounding import AdaRoundSettings, LayerProblem, learn_rounding
from intq.adaptive_rounding.streams import GraphStreams
from intq.errors import IntqError
from intq.graph.qmodules import QuantConv2d, QuantLinear
from intq.progress import progress_bar
from intq.ptq import (
    Batches,
    calibrate,
    calibration_batches,
    prepare_ptq,
    widen_weight_scales_for_int32_bias,
)
from intq.recipes import DEFAULT_RECIPE, Recipe, get_recipe

__all__ = ["AdaRoundLayer", "adaround", "adaround_graph"]

QuantLayer = QuantConv2d | QuantLinear
_UNFOLD_SAMPLES = 4


@dataclass(frozen=True)
class AdaRoundLayer:
    """What AdaRound did to one layer: the columns sampled (block granularity: the images),
    steps run, reconstruction error of nearest and of the learned rounding on them (block
    granularity: the block's output error), whether the learned one was kept, the fraction
    of weights rounded differently from nearest, and the seconds spent."""

    name: str
    columns: int
    steps: int
    nearest_error: float
    learned_error: float
    kept: bool
    changed_fraction: float
    seconds: float


def adaround(
    model: nn.Module,
    calib_data: Batches,
    recipe: Recipe | str = DEFAULT_RECIPE,
    *,
    settings: AdaRoundSettings | None = None,
    bias_correction: bool = True,
    leaf_modules=(),
    batch_size: int = 32,
    progress: bool = True,
    engine: str = "auto",
) -> fx.GraphModule:
    """Post-training quantization of ``model`` (not modified) with AdaRound weights.

    As ``intq.quantize`` (CLE when ``recipe.equalize``; activation ranges calibrated with
    nearest-rounded weights), then ``adaround_graph``. ``bias_correction`` is the empirical
    one of ``adaround_graph``. Returns the simulated-quantized fx module.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    batches = calibration_batches(calib_data, batch_size)
    if not batches:
        raise IntqError("calibration data is empty; give at least one input")
    qgm = prepare_ptq(model, batches[0][:2], recipe, leaf_modules=leaf_modules,
                      equalize_data=batches)
    calibrate(qgm, batches, progress=progress, bias_correction=False, engine=engine)
    rounded, _ = adaround_graph(qgm, batches, settings, bias_correction=bias_correction,
                                progress=progress)
    return rounded


def adaround_graph(
    qgm: fx.GraphModule,
    batches: list[torch.Tensor],
    settings: AdaRoundSettings | None = None,
    *,
    bias_correction: bool = True,
    progress: bool = True,
) -> tuple[fx.GraphModule, list[AdaRoundLayer]]:
    """A copy of the calibrated graph ``qgm`` with every layer's weights AdaRounded on the
    first ``settings.images`` samples of ``batches``, and what was done per layer."""
    settings = settings or AdaRoundSettings()
    images = torch.cat(batches)[: settings.images]
    rounded = copy.deepcopy(qgm)
    generator = torch.Generator().manual_seed(settings.seed)
    streams = GraphStreams(rounded, images)
    if settings.granularity == "block":
        report = _round_blocks(rounded, streams, settings, generator, bias_correction, progress)
    else:
        report = []
        for node in progress_bar(list(rounded.graph.nodes), "AdaRound", enabled=progress):
            layer = _quant_layer(rounded, node)
            if layer is not None:
                x_quantized, x_float = streams.inputs(node)
                report.append(_round_layer(node.target, layer, x_quantized, x_float, settings,
                                           generator, bias_correction))
            if node.op != "output":
                streams.step(node)
    widen_weight_scales_for_int32_bias(rounded)
    return rounded, report


def _round_blocks(rounded: fx.GraphModule, streams: GraphStreams, settings: AdaRoundSettings,
                  generator: torch.Generator, bias_correction: bool,
                  progress: bool) -> list[AdaRoundLayer]:
    """Block by block (``blocks``): learn the block's rounding, write it, then step both
    models over the block, correcting each layer's bias on the way."""
    report = []
    for node in rounded.graph.find_nodes(op="placeholder"):
        streams.step(node)
    blocks = split_blocks(rounded, settings.block_layers)
    for block in progress_bar(blocks, "AdaRound blocks", enabled=progress):
        block = [node for node in block if node.op != "placeholder"]
        if layers_of(rounded, block):
            report += _round_block(rounded, block, streams, settings, generator)
        for node in block:
            layer = _quant_layer(rounded, node)
            if layer is not None and bias_correction:
                x_quantized, x_float = streams.inputs(node)
                problem = _layer_problem(layer, x_quantized, x_float, settings, generator)
                weight = grouped_weight(layer.layer.weight.detach(), layer_groups(layer))
                _correct_bias(layer, problem, weight, problem.bias)
            if node.op != "output":
                streams.step(node)
    return report


def _round_block(rounded: fx.GraphModule, block: list[fx.Node], streams: GraphStreams,
                 settings: AdaRoundSettings, generator: torch.Generator) -> list[AdaRoundLayer]:
    start = time.perf_counter()
    inputs = block_inputs(block)
    quantized = {node: streams.value(node, True) for node in inputs}
    with streams.fake_quant(False):
        target = float_block_output(rounded, block, {n: streams.value(n, False) for n in inputs})
    result = learn_block_rounding(rounded, block, quantized, target, settings, generator)
    kept = result.learned_error <= result.nearest_error
    layers = layers_of(rounded, block)
    report = []
    for node, layer in layers:
        with torch.no_grad():
            nearest = layer.weight_quantizer(getattr(layer, "float_weight", layer.layer.weight))
        weight = learned_weight(layer, result.up[node.target]) if kept else nearest
        changed = float((weight != nearest).float().mean())
        _put_on_grid(layer, weight)
        report.append(AdaRoundLayer(node.target, len(target), result.steps,
                                    result.nearest_error, result.learned_error, kept, changed,
                                    (time.perf_counter() - start) / len(layers)))
    return report


def _round_layer(name: str, layer: QuantLayer, x_quantized: torch.Tensor, x_float: torch.Tensor,
                 settings: AdaRoundSettings, generator: torch.Generator,
                 bias_correction: bool) -> AdaRoundLayer:
    start = time.perf_counter()
    problem = _layer_problem(layer, x_quantized, x_float, settings, generator)
    result = learn_rounding(problem, settings, generator)
    kept = result.learned_error <= result.nearest_error
    scale, bias = (result.scale, result.bias) if kept else (problem.scale, problem.bias)
    weight = problem.weight(result.up.float(), scale) if kept else problem.nearest
    changed = float((weight != problem.nearest).float().mean())
    if bias_correction:
        _correct_bias(layer, problem, weight, bias)
    elif bias is not problem.bias:
        _write_bias(layer, bias.reshape(-1))
    if scale is not problem.scale:
        _set_weight_scale(layer, scale)
    _put_on_grid(layer, weight)
    return AdaRoundLayer(name, problem.columns, result.steps, result.nearest_error,
                         result.learned_error, kept, changed, time.perf_counter() - start)


def _layer_problem(layer: QuantLayer, x_quantized: torch.Tensor, x_float: torch.Tensor,
                   settings: AdaRoundSettings, generator: torch.Generator) -> LayerProblem:
    groups = layer_groups(layer)
    float_weight = getattr(layer, "float_weight", layer.layer.weight).detach()
    w_g = grouped_weight(float_weight, groups)
    scale, zero_point = _grouped_qparams(layer, w_g.shape)
    ratio = w_g / scale
    floor = torch.floor(ratio)
    wq = layer.weight_quantizer
    with torch.no_grad():
        nearest = grouped_weight(wq(float_weight), groups)
    float_bias = _grouped_bias(getattr(layer, "float_bias", layer.layer.bias), w_g.shape)
    inputs, preactivation = _columns(layer, x_quantized, x_float, settings, generator, w_g,
                                     float_bias)
    return LayerProblem(floor, ratio - floor, scale, zero_point, wq.spec.qmin, wq.spec.qmax,
                        nearest, _grouped_bias(layer.layer.bias, w_g.shape), inputs,
                        preactivation, layer.activation, wq.spec.per_channel)


def _columns(layer: QuantLayer, x_quantized, x_float, settings, generator, w_g, float_bias):
    """X̃_g (G, K, M) from the quantized model and W·x + b_float (G, O/G, M) from the float
    model, at the same sampled positions (a few samples at a time: unfolding is large)."""
    columns = max(1, settings.column_budget // patch_rows(layer))
    per_sample = math.ceil(columns / len(x_quantized))
    inputs, preactivations = [], []
    for start in range(0, len(x_quantized), _UNFOLD_SAMPLES):
        chunk = slice(start, start + _UNFOLD_SAMPLES)
        cols, positions = sample_columns(layer, x_quantized[chunk], per_sample, generator)
        inputs.append(cols)
        float_cols = columns_at(layer, x_float[chunk], positions)
        preactivations.append(_affine(w_g, float_bias, float_cols))
    return torch.cat(inputs, dim=2), torch.cat(preactivations, dim=2)


def _affine(w_g: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.bmm(w_g, x) if bias is None else torch.baddbmm(bias, w_g, x)


def _grouped_qparams(layer: QuantLayer, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
    """The weight quantizer's scale and zero point as (G, O/G, 1) float tensors."""
    wq = layer.weight_quantizer
    out_channels = shape[0] * shape[1]
    scale = wq.scale.reshape(-1).expand(out_channels) if wq.scale.numel() == 1 else wq.scale
    zero = wq.zero_point.reshape(-1).float()
    zero = zero.expand(out_channels) if zero.numel() == 1 else zero
    return scale.reshape(shape[0], shape[1], 1).float(), zero.reshape(shape[0], shape[1], 1)


def _grouped_bias(bias: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    return None if bias is None else bias.detach().reshape(shape[0], shape[1], 1)


def _correct_bias(layer: QuantLayer, problem: LayerProblem, weight: torch.Tensor,
                  bias: torch.Tensor | None) -> None:
    """The layer's bias := b + mean over the columns of (W·x + b_float) - (W̃·x̃ + b), with
    b = ``bias`` (G, O/G, 1) or None (zero)."""
    with torch.no_grad():
        current = _affine(weight, bias, problem.inputs)
        shift = (problem.preactivation - current).double().mean(dim=2).reshape(-1)
    base = torch.zeros_like(shift) if bias is None else bias.reshape(-1).double()
    _write_bias(layer, base + shift)


def _write_bias(layer: QuantLayer, bias: torch.Tensor) -> None:
    """Set the layer's bias (creating it if the layer has none), the float one kept as
    ``float_bias``."""
    current = layer.layer.bias
    if not hasattr(layer, "float_bias"):
        original = (torch.zeros(bias.shape) if current is None else current.detach().clone())
        layer.register_buffer("float_bias", original.float())
    if current is None:
        layer.layer.bias = nn.Parameter(bias.float())
    else:
        with torch.no_grad():
            current.copy_(bias.to(current.dtype))


def _set_weight_scale(layer: QuantLayer, scale_g: torch.Tensor) -> None:
    """The weight quantizer's scale := the learned (G, O/G, 1) scale (one value per tensor
    when it quantizes per tensor: every entry is the same then)."""
    wq = layer.weight_quantizer
    flat = scale_g.reshape(-1).float()
    wq.scale = (flat[:1] if wq.scale.numel() == 1 else flat).reshape(wq.scale.shape).clone()


def _put_on_grid(layer: QuantLayer, weight_g: torch.Tensor) -> None:
    """Write W̃ into the layer (the float weight kept as ``float_weight``); the weight
    quantizer then reproduces W̃ exactly."""
    weight = layer.layer.weight
    if not hasattr(layer, "float_weight"):
        layer.register_buffer("float_weight", weight.detach().clone())
    with torch.no_grad():
        weight.copy_(ungrouped_weight(weight_g, weight.shape))
        requantized = layer.weight_quantizer(weight)
    assert torch.equal(requantized, weight), "AdaRound weights are not on the weight grid"


def _quant_layer(qgm: fx.GraphModule, node: fx.Node) -> QuantLayer | None:
    if node.op != "call_module":
        return None
    module = qgm.get_submodule(node.target)
    return module if isinstance(module, QuantConv2d | QuantLinear) else None
