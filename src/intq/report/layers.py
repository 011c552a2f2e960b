"""Per-layer report of a quantized graph: where is accuracy lost?

For every quantized tensor, SQNR = 10·log10(Σ ref² / Σ (ref - q)²) in dB (PAPER.md 1):
- weights: folded float weights vs their fake-quantized values, plus the spread of the
  per-channel ranges (max channel range / median channel range: large spreads are why
  per-layer weight quantization fails on depthwise convs);
- activations, two numbers: ``own`` = the float activation vs that quantizer's fake-quant of
  it (the error this quantizer adds alone), ``end_to_end`` = the float network's activation vs
  the fully quantized network's (errors accumulated up to this point);
- float outputs (a final linear layer without output quantizer, ``intq.graph.place``): own is
  inf (nothing rounds that output), end to end as for activations: for a classifier, the
  SQNR of the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import fx, nn

from intq.fakequant import Quantizer
from intq.graph.place import activation_quantizers, float_output_layers, quant_layers
from intq.qmath import sqnr_db

__all__ = ["LayerRow", "format_layer_report", "layer_report"]


@dataclass(frozen=True)
class LayerRow:
    """One quantized tensor: ``kind`` is "weight", "activation" or "float output"."""

    name: str
    kind: str
    spec: str
    sqnr_db: float
    end_to_end_sqnr_db: float | None = None
    channel_range_spread: float | None = None


def layer_report(qgm: fx.GraphModule, x: torch.Tensor) -> list[LayerRow]:
    """Weight rows, then activation rows in graph order, then float output rows, for a
    calibrated ``qgm`` on ``x``."""
    return _weight_rows(qgm) + _activation_rows(qgm, x)


def _weight_rows(qgm: fx.GraphModule) -> list[LayerRow]:
    rows = []
    for name, layer in quant_layers(qgm):
        w = layer.layer.weight.detach()
        with torch.no_grad():
            wq = layer.quantized_weight()
        span = w.flatten(1).amax(1) - w.flatten(1).amin(1)
        spread = float(span.max() / span.median().clamp_min(1e-12))
        rows.append(LayerRow(name, "weight", layer.weight_quantizer.spec.describe(),
                             sqnr_db(w, wq), channel_range_spread=spread))
    return rows


def _activation_rows(qgm: fx.GraphModule, x: torch.Tensor) -> list[LayerRow]:
    watched: dict[tuple[str, str], nn.Module] = {
        **{("activation", name): q for name, q in activation_quantizers(qgm)},
        **{("float output", name): layer for name, layer in float_output_layers(qgm)},
    }
    float_in, float_out = _record(qgm, watched, x, fake_quant=False)
    _, quant_out = _record(qgm, watched, x, fake_quant=True)
    rows = []
    for (kind, name), module in watched.items():
        e2e = sqnr_db(_flat_cat(float_out[kind, name]), _flat_cat(quant_out[kind, name]))
        if kind == "float output":
            rows.append(LayerRow(name, kind, "float32, no output quantizer", math.inf, e2e))
            continue
        ref = _flat_cat(float_in[kind, name])  # a concat group's quantizer sees several shapes
        with torch.no_grad():
            own = sqnr_db(ref, module(ref))
        rows.append(LayerRow(name, kind, module.spec.describe(), own, e2e))
    return rows


def _flat_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten() for t in tensors])


def _record(qgm, modules: dict[tuple[str, str], nn.Module], x: torch.Tensor, fake_quant: bool):
    """Inputs and outputs of each of ``modules`` (activation quantizers, float-output layers)
    with every quantizer's fake quant on or off."""
    inputs: dict[tuple[str, str], list] = {key: [] for key in modules}
    outputs: dict[tuple[str, str], list] = {key: [] for key in modules}
    saved = {m: m.fake_quant for m in qgm.modules() if isinstance(m, Quantizer)}

    def keep(key: tuple[str, str]):
        def hook(_module, args, out) -> None:
            inputs[key].append(args[0])
            outputs[key].append(out)

        return hook

    hooks = [m.register_forward_hook(keep(key)) for key, m in modules.items()]
    try:
        for m in saved:
            m.fake_quant = fake_quant
        with torch.no_grad():
            qgm(x)
    finally:
        for hook in hooks:
            hook.remove()
        for m, state in saved.items():
            m.fake_quant = state
    return inputs, outputs


def format_layer_report(rows: list[LayerRow], worst: int | None = None) -> str:
    """A markdown table, worst SQNR first when ``worst`` limits the rows."""
    if worst is not None:
        rows = sorted(rows, key=lambda r: r.end_to_end_sqnr_db or r.sqnr_db)[:worst]
    lines = [
        "| tensor | kind | SQNR dB (own) | SQNR dB (end to end) | channel range spread |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        e2e = "" if r.end_to_end_sqnr_db is None else f"{r.end_to_end_sqnr_db:.1f}"
        spread = "" if r.channel_range_spread is None else f"{r.channel_range_spread:.1f}"
        lines.append(f"| {r.name} | {r.kind} | {r.sqnr_db:.1f} | {e2e} | {spread} |")
    return "\n".join(lines) + "\n"
