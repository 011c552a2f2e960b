"""calibrate_activation_ranges: a QAT graph starts from PTQ's calibrated ranges and keeps them."""

import torch
from torch import nn

from intq.graph.place import activation_quantizers
from intq.ptq import quantize
from intq.qat import QATSchedule, calibrate_activation_ranges, prepare_qat, train_qat
from intq.recipes import get_recipe


def small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 4, 3, padding=1), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 3)).eval()


def test_ranges_equal_ptq_calibration_and_stay_through_training():
    """Each activation quantizer takes the MSE range that intq.quantize (same recipe, no bias
    correction) finds, frozen; training steps with act_range_freeze_step=0 leave it alone
    while the weights move."""
    model, x = small_net(), torch.randn(64, 1, 6, 6)
    recipe = get_recipe("sym-per-channel-8")
    assert recipe.activation.observer == "mse"
    qgm = prepare_qat(model, x[:2], recipe)
    calibrate_activation_ranges(qgm, model, x, recipe)
    ptq = dict(activation_quantizers(quantize(model, x, recipe, bias_correction=False,
                                              progress=False)))
    before = {}
    for name, quantizer in activation_quantizers(qgm):
        assert quantizer.frozen
        assert torch.equal(quantizer.scale, ptq[name].scale), name
        assert torch.equal(quantizer.zero_point, ptq[name].zero_point), name
        before[name] = quantizer.scale.clone()
    weights = {k: v.clone() for k, v in qgm.state_dict().items() if k.endswith("weight")}
    train_qat(qgm, x, teacher=model, lr=0.01, batch_size=16, max_steps=4, epochs=4,
              schedule=QATSchedule(act_range_freeze_step=0))
    assert all(torch.equal(q.scale, before[n]) for n, q in activation_quantizers(qgm))
    assert any(not torch.equal(v, qgm.state_dict()[k]) for k, v in weights.items())
