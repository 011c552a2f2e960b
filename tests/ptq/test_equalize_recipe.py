"""``Recipe.equalize``: its default per weight granularity, and what it changes in PTQ: the
prepared graph is cross-layer equalized, and per-tensor weights on a depthwise net whose
channel ranges differ by 1000x lose far less."""

from __future__ import annotations

import pytest
import torch
from graph.nets import MobileNetV1Like, randomize_batchnorms
from torch import nn

from intq.graph.qmodules import QuantConv2d
from intq.ptq import prepare_ptq, quantize, set_fake_quant
from intq.recipes import get_recipe

from .nets import images


@pytest.mark.parametrize(("name", "options", "want"), [
    ("asym-per-layer-8", {}, True),
    ("asym-per-layer-4", {"weight_only": True}, False),  # the paper's Table 2 setting
    ("sym-per-channel-8", {}, False),
    ("asym-per-channel-8", {"per_channel": False}, True),
    ("asym-per-layer-8", {"equalize": False}, False),
    ("sym-per-channel-4", {"equalize": True}, True),
])
def test_default_is_on_for_per_tensor_weights_with_quantized_activations(name, options, want):
    assert get_recipe(name, **options).equalize is want


def _net() -> nn.Module:
    torch.manual_seed(0)
    model = randomize_batchnorms(MobileNetV1Like()).eval()
    dw = model.features[3]  # first depthwise conv: channel ranges 1000x apart
    dw.weight.data *= torch.logspace(-1.5, 1.5, dw.out_channels).reshape(-1, 1, 1, 1)
    return model


def _activations_and_weights(qgm):
    layers = {name: m for name, m in qgm.named_modules() if isinstance(m, QuantConv2d)}
    return ({n: m.activation for n, m in layers.items()},
            {n: m.layer.weight.detach().clone() for n, m in layers.items()})


def test_the_flag_changes_the_prepared_graph():
    model, x = _net(), images(2)
    plain = prepare_ptq(model, x, get_recipe("asym-per-layer-8", equalize=False))
    equalized = prepare_ptq(model, x, get_recipe("asym-per-layer-8"))
    acts0, weights0 = _activations_and_weights(plain)
    acts1, weights1 = _activations_and_weights(equalized)
    assert set(acts0.values()) == set(acts1.values()) == {"relu6"}  # relu6 kept (bounded)
    assert all(not torch.equal(weights0[n], weights1[n]) for n in weights0)
    set_fake_quant(plain, False)
    set_fake_quant(equalized, False)
    with torch.no_grad():  # exact on the data its relu6 peaks were measured on
        torch.testing.assert_close(equalized(x), plain(x), rtol=1e-4, atol=1e-4)


def _block(cin: int, cout: int, k: int, groups: int = 1) -> nn.Sequential:
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU())


class Separable(nn.Module):
    """conv-BN-ReLU -> depthwise-BN-ReLU -> pointwise-BN-ReLU -> pool -> linear, where the
    depthwise outputs are 1000x apart and the pointwise conv undoes it: the shape of a trained
    MobileNet after BN folding, with a function that equalization keeps exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.features = nn.Sequential(_block(1, 8, 3), _block(8, 8, 3, groups=8),
                                      _block(8, 16, 1))
        self.head = nn.Linear(16, 10)
        randomize_batchnorms(self)
        spread = torch.logspace(-1.5, 1.5, 8)
        with torch.no_grad():
            bn = self.features[1][1]
            bn.weight *= spread
            bn.bias *= spread
            self.features[2][0].weight /= spread.reshape(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


def _relative_error(qm, reference, x) -> float:
    with torch.no_grad():
        want = reference(x)
        return float((qm(x) - want).norm() / want.norm())


def test_per_tensor_ptq_error_drops_with_equalization():
    model, calib, x = Separable().eval(), images(16), images(32)
    plain = quantize(model, calib, get_recipe("asym-per-layer-8", equalize=False),
                     progress=False)
    equalized = quantize(model, calib, get_recipe("asym-per-layer-8"), progress=False)
    err_plain, err_equalized = _relative_error(plain, model, x), _relative_error(equalized,
                                                                                 model, x)
    assert err_equalized < err_plain / 3, (err_plain, err_equalized)
