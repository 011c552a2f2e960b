"""prepare_qat with ``Recipe.equalize``: the float model's conv+BN pairs are equalized through
BN γ and β before QAT wraps them, so with fake quantization off the QAT graph still computes
the float model, and each pair's folded weight ranges are equal."""

from __future__ import annotations

import pytest
import torch
from graph.nets import MobileNetV1Like, randomize_batchnorms
from torch import nn

from intq.fakequant import Quantizer
from intq.qat import QATConvBn2d, prepare_qat
from intq.recipes import get_recipe


def _relu_model() -> nn.Module:
    """MobileNetV1Like with relu: equalization is exact on it."""
    torch.manual_seed(0)
    model = randomize_batchnorms(MobileNetV1Like()).eval()
    for i, m in enumerate(model.features):
        if isinstance(m, nn.ReLU6):
            model.features[i] = nn.ReLU()
    return model


def _qat_layers(qgm) -> dict[str, QATConvBn2d]:
    return {n: m for n, m in qgm.named_modules() if isinstance(m, QATConvBn2d)}


def test_equalized_qat_graph_without_fake_quant_is_the_float_model():
    model, x = _relu_model(), torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    qgm = prepare_qat(model, x[:2], get_recipe("asym-per-layer-8")).eval()
    for module in qgm.modules():
        if isinstance(module, Quantizer):
            module.fake_quant, module.observe = False, False
    with torch.no_grad():
        want, got = model(x), qgm(x)
    assert float((got - want).abs().max() / want.abs().max()) <= 1e-5


def test_the_flag_scales_bn_and_equalizes_folded_ranges():
    model, x = _relu_model(), torch.rand(2, 1, 28, 28)
    plain = _qat_layers(prepare_qat(model, x, get_recipe("asym-per-layer-8", equalize=False)))
    equalized = _qat_layers(prepare_qat(model, x, get_recipe("asym-per-layer-8")))
    assert not torch.equal(plain["features.0"].bn.weight, equalized["features.0"].bn.weight)
    torch.testing.assert_close(plain["features.0"].conv.weight,
                               equalized["features.0"].conv.weight, rtol=0, atol=0)
    torch.testing.assert_close(plain["features.0"].bn.running_var,
                               equalized["features.0"].bn.running_var, rtol=0, atol=0)
    names = list(equalized)
    for first, second in zip(names, names[1:], strict=False):
        w1 = equalized[first].folded_parameters()[0].detach().double()
        w2 = equalized[second].folded_parameters()[0].detach().double()
        groups = equalized[second].conv.groups
        r1 = w1.flatten(1).abs().amax(1)
        r2 = (w2.abs().amax((0, 2, 3)) if groups == 1 else w2.abs().amax((1, 2, 3)))
        assert r1.tolist() == pytest.approx(r2.tolist(), rel=3e-4), (first, second)
