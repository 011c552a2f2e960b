"""Activation ranges of a QAT graph from post-training calibration.

    qgm = prepare_qat(model, x[:2], recipe)
    calibrate_activation_ranges(qgm, model, x[:256], recipe)   # PTQ's ranges, frozen
    train_qat(qgm, x, ..., schedule=dataclasses.replace(schedule, act_range_freeze_step=0))

The paper's QAT learns activation ranges as an EMA of batch min/max from the first step. When
fine-tuning a well-trained model for a few hundred steps, the ranges that PTQ calibration
finds with the recipe's own observer (e.g. the MSE-optimal clipping) are a better start and
need not move: every activation quantizer of the QAT graph takes the range that
``intq.ptq.calibrate`` finds for the quantizer of the same name in the PTQ graph of the same
model and recipe, and is frozen on it. ``apply_schedule`` keeps a quantizer frozen on such a
range from step 0 (``act_range_freeze_step=0``), before it has observed anything itself.
"""

from __future__ import annotations

import torch
from torch import fx, nn

from intq.graph.place import activation_quantizers
from intq.ptq import calibrate, prepare_ptq
from intq.recipes import Recipe

__all__ = ["calibrate_activation_ranges"]

_QPARAMS = ("scale", "zero_point", "min_val", "max_val")


@torch.no_grad()
def calibrate_activation_ranges(qgm: fx.GraphModule, model: nn.Module, x: torch.Tensor,
                                recipe: Recipe, *, batch_size: int = 32) -> None:
    """Set every activation quantizer of the QAT graph ``qgm`` to the range PTQ calibration of
    ``model`` with ``recipe`` (its observers, no bias correction) finds on ``x``; frozen."""
    ptq = prepare_ptq(model, x[:2], recipe)
    calibrate(ptq, [x[i : i + batch_size] for i in range(0, len(x), batch_size)],
              progress=False, bias_correction=False)
    calibrated = dict(activation_quantizers(ptq))
    for name, quantizer in activation_quantizers(qgm):
        source = calibrated.get(name)
        if source is None or source.spec.bits != quantizer.spec.bits:
            raise ValueError(f"calibrate_activation_ranges: the PTQ graph has no {name!r} "
                             f"quantizer like the QAT graph's ({quantizer.spec.describe()})")
        quantizer.frozen = False
        for buffer in _QPARAMS:
            setattr(quantizer, buffer, getattr(source, buffer).clone())
        quantizer.frozen = True
