"""Per-quantizer sensitivity of a calibrated quantized graph: which rounding costs the most?

For every quantizer q (each layer's weight quantizer, each activation quantizer), the logits
of the graph on ``x`` with only q's fake quantization on, and with only q's off, are compared
with the reference: the same graph with every quantizer off (the float model: the folded,
equalized float graph with its float biases, ``QuantConv2d.simulated_bias``). Each row gives
the logit SQNR in dB and the top-1 agreement of both. Nothing is re-calibrated: the analysis
flips the quantizers' ``fake_quant`` switches (2·Q + 2 forward passes over ``x`` for Q
quantizers) and leaves them as they were.

- only on: the error q adds alone (high SQNR = harmless quantizer);
- only off: what the fully quantized model gains without q (the closer to the all-on SQNR,
  the less q matters; a large gain marks the layer to keep at higher precision).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import fx

from intq.eval.metrics import logit_sqnr_db, top1_agreement
from intq.fakequant import Quantizer
from intq.graph.place import activation_quantizers, quant_layers

__all__ = [
    "Sensitivity",
    "SensitivityRow",
    "format_sensitivity",
    "quantizer_sensitivity",
    "quantizers_by_key",
]

Key = tuple[str, str]  # (kind, name): ("weight", layer) or ("activation", owner node)


@dataclass(frozen=True)
class SensitivityRow:
    """One quantizer: logit SQNR (dB) and top-1 agreement with only it on / only it off."""

    name: str
    kind: str
    spec: str
    only_on_sqnr_db: float
    only_on_agreement: float
    only_off_sqnr_db: float
    only_off_agreement: float


@dataclass(frozen=True)
class Sensitivity:
    """Rows in graph order (weights, then activations) and the all-on baseline."""

    rows: tuple[SensitivityRow, ...]
    all_on_sqnr_db: float
    all_on_agreement: float
    samples: int

    def as_dict(self) -> dict:
        return {"samples": self.samples, "all_on_sqnr_db": self.all_on_sqnr_db,
                "all_on_agreement": self.all_on_agreement,
                "rows": [vars(r) for r in self.rows]}


def quantizers_by_key(qgm: fx.GraphModule) -> dict[Key, Quantizer]:
    """Every quantizer of ``qgm``: ("weight", layer name), then ("activation", owner)."""
    keys = {("weight", name): layer.weight_quantizer for name, layer in quant_layers(qgm)}
    keys |= {("activation", name): q for name, q in activation_quantizers(qgm)}
    return keys


def quantizer_sensitivity(qgm: fx.GraphModule, x: torch.Tensor, *,
                          batch_size: int = 32) -> Sensitivity:
    """The sensitivity table of the calibrated ``qgm`` on inputs ``x`` (see module doc)."""
    quantizers = quantizers_by_key(qgm)
    saved = {q: q.fake_quant for q in qgm.modules() if isinstance(q, Quantizer)}
    try:
        reference = _logits_with(qgm, quantizers, (), x, batch_size)
        all_on = _logits_with(qgm, quantizers, quantizers, x, batch_size)
        rows = []
        for key, q in quantizers.items():
            only_on = _logits_with(qgm, quantizers, [key], x, batch_size)
            only_off = _logits_with(qgm, quantizers, [k for k in quantizers if k != key], x,
                                    batch_size)
            rows.append(SensitivityRow(
                key[1], key[0], q.spec.describe(),
                logit_sqnr_db(reference, only_on), top1_agreement(reference, only_on),
                logit_sqnr_db(reference, only_off), top1_agreement(reference, only_off)))
    finally:
        for q, state in saved.items():
            q.fake_quant = state
    return Sensitivity(tuple(rows), logit_sqnr_db(reference, all_on),
                       top1_agreement(reference, all_on), len(x))


def _logits_with(qgm: fx.GraphModule, quantizers: dict[Key, Quantizer], on: Iterable[Key],
                 x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of ``qgm`` on ``x`` with exactly the quantizers ``on`` fake-quantizing."""
    on = set(on)
    for key, q in quantizers.items():
        q.fake_quant = key in on
    with torch.no_grad():
        return torch.cat([qgm(b) for b in x.split(batch_size)])


def format_sensitivity(table: Sensitivity, worst: int | None = None) -> str:
    """A markdown table; with ``worst``, the ``worst`` rows whose only-off SQNR gains most."""
    rows = list(table.rows)
    if worst is not None:
        rows = sorted(rows, key=lambda r: -r.only_off_sqnr_db)[:worst]
    lines = [
        f"All quantizers on: logit SQNR {table.all_on_sqnr_db:.1f} dB, top-1 agreement "
        f"{table.all_on_agreement:.3f} ({table.samples} samples).",
        "",
        "| quantizer | kind | spec | only on: SQNR dB | only on: agree | only off: SQNR dB "
        "| only off: agree |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r.name} | {r.kind} | {r.spec} | {r.only_on_sqnr_db:.1f} | "
                     f"{r.only_on_agreement:.3f} | {r.only_off_sqnr_db:.1f} | "
                     f"{r.only_off_agreement:.3f} |")
    return "\n".join(lines) + "\n"
