"""Post-training quantization: prepare the graph, calibrate the quantizers, freeze them.

    qm = intq.quantize(model, calib_x, recipe="sym-per-channel-8")   # a runnable fx module
    qm(x)                                                             # simulated int8 inference

Calibration order: weights first (each weight quantizer observes its folded weight once),
then activations: the calibration batches run with the weights already fake-quantized and
every activation quantizer observing its input in float (not yet fake-quantized), so each
range is estimated on the activations the quantized weights actually produce. Afterwards
every quantizer is frozen with fake quantization on.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import fx, nn

from intq.errors import IntqError
from intq.fakequant import Quantizer
from intq.graph import prepare_float_graph
from intq.graph._fx import is_leaf
from intq.graph.bias_correction import InputMeans, correct_bias
from intq.graph.equalize import cross_layer_equalize, relu6_preactivation_peaks
from intq.graph.ort_calibration import OrtCalibrationPass
from intq.graph.place import activation_quantizers, place_quantizers, quant_layers
from intq.progress import progress_bar
from intq.recipes import DEFAULT_RECIPE, Recipe, get_recipe

__all__ = [
    "CALIBRATION_ENGINES",
    "calibrate",
    "calibration_batches",
    "prepare_ptq",
    "quantize",
    "set_fake_quant",
    "widen_weight_scales_for_int32_bias",
]

CALIBRATION_ENGINES = ("auto", "onnxruntime", "torch")
Batches = torch.Tensor | Iterable[torch.Tensor | Sequence[torch.Tensor]]


def quantize(
    model: nn.Module,
    calib_data: Batches,
    recipe: Recipe | str = DEFAULT_RECIPE,
    *,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    batch_size: int = 32,
    progress: bool = True,
    bias_correction: bool = True,
    engine: str = "auto",
) -> fx.GraphModule:
    """Post-training quantization of ``model`` (not modified) calibrated on ``calib_data``.

    ``calib_data``: a float tensor (N, C, H, W) or an iterable of batches (tensors, or tuples
    whose first element is the input, like a DataLoader). ``recipe``: a Recipe or a preset
    name (``intq.recipes.recipe_names()``). ``bias_correction``: remove the mean output
    shift of weight quantization from the biases (see ``calibrate``). ``engine`` runs the
    calibration pass in ONNX Runtime or eager torch (see ``calibrate``). Returns the
    simulated-quantized fx module.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    batches = list(_batches(calib_data, batch_size))
    if not batches:
        raise IntqError("calibration data is empty; give at least one input")
    qgm = prepare_ptq(model, batches[0][:2], recipe, leaf_modules=leaf_modules,
                      equalize_data=batches)
    calibrate(qgm, batches, progress=progress, bias_correction=bias_correction, engine=engine)
    return qgm


def prepare_ptq(
    model: nn.Module,
    example_input: torch.Tensor,
    recipe: Recipe,
    *,
    leaf_modules: Iterable[str | type[nn.Module]] = (),
    equalize_data: Sequence[torch.Tensor] | None = None,
) -> fx.GraphModule:
    """The fused graph of ``model`` (cross-layer equalized if ``recipe.equalize``) with the
    quantizers of ``recipe`` placed, not calibrated. Equalization crosses a relu6 within the
    peaks measured on ``equalize_data`` (default: ``example_input``; see
    ``intq.graph.equalize``)."""
    float_graph = prepare_float_graph(model, example_input, leaf_modules=leaf_modules)
    if recipe.equalize:
        data = [example_input] if equalize_data is None else equalize_data
        peaks = relu6_preactivation_peaks(float_graph, data)
        float_graph, _ = cross_layer_equalize(float_graph, relu6_peaks=peaks)
    return place_quantizers(float_graph, recipe)


def calibrate(
    qgm: fx.GraphModule,
    batches: Iterable[torch.Tensor],
    *,
    progress: bool = True,
    bias_correction: bool = True,
    engine: str = "auto",
):
    """Calibrate the weight quantizers, then the activation quantizers over ``batches``;
    freeze everything with fake quantization on.

    ``bias_correction`` also measures each layer's input means in the same pass and removes
    the expected output shift of the weight quantization from the biases
    (``intq.graph.bias_correction``). Weight-only recipes run no calibration pass and get
    no correction (the paper's Table 2 setting). ``engine`` runs the calibration pass in
    ``"onnxruntime"`` (``intq.graph.ort_calibration``: several times faster on CPU) or
    eager ``"torch"``; ``"auto"`` uses ONNX Runtime when the graph lives on the CPU, has no
    opaque leaf modules (whose Python a trace could freeze) and exports, else torch.
    """
    if engine not in CALIBRATION_ENGINES:
        raise IntqError(f"unknown calibration engine {engine!r}; choose one of "
                        f"{', '.join(CALIBRATION_ENGINES)}")
    _calibrate_weights(qgm)
    act_quantizers = dict(activation_quantizers(qgm))
    if not act_quantizers:
        return
    for q in act_quantizers.values():
        q.observe, q.fake_quant, q.frozen = True, False, False
    batches = list(batches)
    ort_pass = _ort_pass(qgm, batches[0], engine) if batches else None
    layers = quant_layers(qgm) if bias_correction else ()
    # the eager pass feeds the means through forward pre-hooks, the ORT pass explicitly
    means = {name: InputMeans(layer if ort_pass is None else None) for name, layer in layers}
    try:
        with torch.no_grad():
            for x in progress_bar(batches, "calibrating", enabled=progress):
                if ort_pass is None:
                    qgm(x)
                else:
                    ort_pass.observe(x, qgm, means)
    finally:
        for m in means.values():
            m.remove()
    for owner, q in act_quantizers.items():
        _freeze(q, where=f"activation quantizer after {owner}")
        _warn_if_constant(q, owner)
    layers = dict(quant_layers(qgm))
    for name, m in means.items():
        if m.count == 0:
            raise IntqError(f"layer {name} saw no calibration data; make sure the "
                            "calibration inputs reach every layer")
        correct_bias(layers[name], m.mean())
    widen_weight_scales_for_int32_bias(qgm)


def _ort_pass(qgm: fx.GraphModule, example: torch.Tensor, engine: str) -> OrtCalibrationPass | None:
    """The ONNX Runtime calibration pass, or None for the eager one (``engine`` torch, or auto
    on a graph off the CPU, with leaf modules, or that does not export)."""
    if engine == "torch":
        return None
    on_cpu = all(t.device.type == "cpu" for t in (*qgm.parameters(), *qgm.buffers(), example))
    has_leaves = any(is_leaf(qgm, node) for node in qgm.graph.nodes)
    if engine == "auto" and (not on_cpu or has_leaves):
        return None
    try:
        return OrtCalibrationPass(qgm, example, batch_size=len(example))
    except Exception as error:  # torch.onnx / onnxruntime raise many types
        if engine == "auto":
            return None
        raise IntqError(f"the calibration pass does not run in ONNX Runtime ({error}); "
                        "use engine='torch'") from error


def widen_weight_scales_for_int32_bias(qgm: fx.GraphModule, headroom_bits: int = 30) -> int:
    """Raise weight scales so every int32 bias fits in ``2^headroom_bits``; returns how many
    channels changed.

    A channel whose folded weights are almost zero (a BN with γ ≈ 0: a dead channel) gets a
    tiny scale S_w[c], and its bias b[c] / (S_in·S_w[c]) overflows the int32 accumulator.
    ``S_w[c] >= |b[c]| / (S_in·2^headroom_bits)`` keeps it in range; such channels output
    their bias, which is what they computed in float too.
    """
    changed = 0
    for _name, layer in quant_layers(qgm):
        q_in, bias = layer.input_quantizer, layer.layer.bias
        if q_in is None or bias is None:
            continue
        wq = layer.weight_quantizer
        floor = bias.detach().double().abs() / (q_in.scale.double() * 2.0**headroom_bits)
        if wq.scale.numel() == 1:  # one scale for the whole tensor: the widest channel rules
            floor = floor.max()
        widened = torch.maximum(wq.scale.double(), floor)
        if bool((widened > wq.scale.double()).any()):
            changed += int((widened > wq.scale.double()).sum())
            wq.scale = _float32_not_below(widened).reshape(wq.scale.shape)
    if changed:
        warnings.warn(
            f"{changed} weight channel(s) with near-zero weights got a wider scale so their "
            "int32 bias fits the accumulator", stacklevel=2
        )
    return changed


def _float32_not_below(x: torch.Tensor) -> torch.Tensor:
    """float32 values >= ``x`` (float64), each the nearest float32 at or above."""
    y = x.float()
    return torch.where(y.double() < x, torch.nextafter(y, torch.full_like(y, float("inf"))), y)


def set_fake_quant(qgm: fx.GraphModule, enabled: bool) -> None:
    """Switch fake quantization of every quantizer on or off (off: float weights and
    activations; biases keep any calibration correction)."""
    for module in qgm.modules():
        if isinstance(module, Quantizer):
            module.fake_quant = enabled


def _calibrate_weights(qgm: fx.GraphModule) -> None:
    for name, layer in quant_layers(qgm):
        q = layer.weight_quantizer
        q.observer.reset()
        q.observer.update(layer.layer.weight.detach())
        _freeze(q, where=f"weight quantizer of {name}")


def _freeze(q: Quantizer, where: str) -> None:
    if not q.observer.has_data:
        raise IntqError(
            f"the {where} saw no data during calibration; make sure the "
            "calibration inputs reach every layer"
        )
    q.calculate_qparams()
    q.observe, q.frozen, q.fake_quant = False, True, True


def _warn_if_constant(q: Quantizer, owner: str) -> None:
    """A range of width 0 (all-black calibration images, a ReLU that never fires): the grid
    then only covers [min(0, c), max(0, c)] (scale 1.0 if c = 0), which real inputs exceed."""
    lo, hi = q.observer.min_val, q.observer.max_val  # what was seen, before any clipping
    if bool((lo == hi).all()):
        value = float(lo.reshape(-1)[0])
        warnings.warn(f"the activation after {owner} is the constant {value:g} on every "
                      "calibration input, so its range is degenerate; check the calibration "
                      "data", stacklevel=3)


def calibration_batches(data: Batches, batch_size: int = 32) -> list[torch.Tensor]:
    """``data`` (a tensor, split in ``batch_size`` batches, or an iterable of batches) as a
    list of checked float batches."""
    return list(_batches(data, batch_size))


def _batches(data: Batches, batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        _check_input(data)
        yield from data.split(batch_size)
        return
    for item in data:
        x = item if isinstance(item, torch.Tensor) else item[0]
        _check_input(x)
        yield x


def _check_input(x: torch.Tensor) -> None:
    if x.numel() == 0:
        raise IntqError(f"a calibration batch of shape {tuple(x.shape)} is empty; give at "
                        "least one input")
    if not x.is_floating_point():
        raise IntqError(f"calibration inputs must be float tensors, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise IntqError("calibration inputs contain NaN or Inf values; clean the data first")
