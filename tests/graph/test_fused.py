"""Fused modules: the activation tag, its clamp range, and composition of clamps."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intq.graph import (
    ACTIVATIONS,
    FusedAdd,
    FusedConv2d,
    FusedLinear,
    activation_range,
    apply_activation,
    compose_activations,
)


def clamp_ref(x, activation):
    low, high = {None: (None, None), "relu": (0.0, None), "relu6": (0.0, 6.0)}[activation]
    return x.clamp(min=low, max=high) if low is not None else x


def test_activation_ranges():
    assert [activation_range(a) for a in ACTIVATIONS] == [None, (0.0, None), (0.0, 6.0)]


@pytest.mark.parametrize(("first", "then"), list(itertools.product(ACTIVATIONS, repeat=2)))
def test_composed_activation_equals_applying_both(first, then):
    x = torch.linspace(-10, 10, 81)
    want = clamp_ref(clamp_ref(x, first), then)
    assert torch.equal(apply_activation(x, compose_activations(first, then)), want)


def test_unknown_activation_is_rejected():
    with pytest.raises(ValueError, match="activation must be one of"):
        FusedAdd("sigmoid")


def test_fused_modules_compute_layer_bn_clamp():
    torch.manual_seed(0)
    conv, bn, lin = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4).eval(), nn.Linear(5, 2)
    x, v = torch.randn(2, 3, 6, 6) * 4, torch.randn(3, 5) * 4
    with torch.no_grad():
        assert torch.equal(FusedConv2d(conv, bn, "relu6")(x), F.relu6(bn(conv(x))))
        assert torch.equal(FusedConv2d(conv)(x), conv(x))
        assert torch.equal(FusedLinear(lin, None, "relu")(v), F.relu(lin(v)))
        assert torch.equal(FusedAdd("relu")(x, -x * 0.5), F.relu(x * 0.5))
    assert FusedConv2d(conv, activation="relu").activation_range == (0.0, None)
    assert "activation='relu6'" in repr(FusedConv2d(conv, bn, "relu6"))
