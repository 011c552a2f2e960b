"""Quantization-aware fine-tuning that starts from a post-training-quantized graph.

    ptq = intq.adaround(model, calib_x, recipe)            # or intq.quantize(...)
    qgm = prepare_qat_from_ptq(ptq)                        # trainable, BN folded and frozen
    train_qat(qgm, x, teacher=model, schedule=FROM_PTQ_SCHEDULE, ...)
    deployable = convert_qat(qgm)

The PTQ graph already is the paper's training graph after the BN freeze: BN folded into the
weights with the running statistics, weights and activations fake-quantized with the
straight-through estimator, the int32 bias rounded with a straight-through gradient too. It
keeps what PTQ found: cross-layer equalization, the bias correction, AdaRound's rounding (the
weights sit on the grid and each weight quantizer keeps its calibrated scale, so training
moves a weight off its AdaRound choice only when the loss pulls it past half a step), and the
calibrated activation ranges, all frozen. Training then moves only the weights and biases
(and, with ``learn_weight_scales``, the weight scales: LSQ).
"""

from __future__ import annotations

import copy

from torch import fx

from intq.fakequant import Quantizer
from intq.graph.place import quant_layers
from intq.qat.schedule import QATSchedule

__all__ = ["FROM_PTQ_SCHEDULE", "prepare_qat_from_ptq"]

_PTQ_BUFFERS = ("float_weight", "float_bias")


def prepare_qat_from_ptq(ptq: fx.GraphModule, *,
                         learn_weight_scales: bool = False) -> fx.GraphModule:
    """A training-mode copy of the calibrated PTQ graph ``ptq`` for ``train_qat``: every
    quantizer frozen at its calibrated range with fake quantization on, and the float weight
    and bias that AdaRound and bias correction keep beside the quantized ones dropped (the
    trained weights are the model from now on). ``learn_weight_scales``: each weight
    quantizer's scale trains too (``Quantizer.learn_scale``, LSQ); ``convert_qat`` bakes it."""
    qgm = copy.deepcopy(ptq)
    for module in qgm.modules():
        if isinstance(module, Quantizer):
            if not module.has_qparams:
                raise ValueError("prepare_qat_from_ptq: the PTQ graph is not calibrated")
            module.frozen, module.observe, module.fake_quant = True, False, True
    for _name, layer in quant_layers(qgm):
        for buffer in _PTQ_BUFFERS:
            if buffer in layer._buffers:
                del layer._buffers[buffer]
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
        if learn_weight_scales:
            layer.weight_quantizer.learn_scale()
    return qgm.train()


FROM_PTQ_SCHEDULE = QATSchedule(quant_delay=0, bn_freeze_step=None, act_range_freeze_step=0)
"""The schedule for a ``prepare_qat_from_ptq`` graph: quantized and its calibrated activation
ranges frozen from step 0; there is no BN left to freeze."""
