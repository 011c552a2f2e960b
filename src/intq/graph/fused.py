"""Fused op modules: conv/linear/add with their BN and clamp, one op with one output tensor.

A fused node is the unit of quantization (PAPER.md 3, 4): its weights are quantized as a
whole (the folded ones), and only its output gets an activation quantizer; nothing can be
placed between the conv and its BN/ReLU, nor between an add and its ReLU.

    FusedConv2d(conv, bn, activation)(x) = act(bn(conv(x)))      bn is None once folded
    FusedLinear(linear, bn, activation)(x) = act(bn(linear(x)))
    FusedAdd(activation)(a, b)           = act(a + b)

with `act` one of `None` (identity), `"relu"` (clamp to [0, inf)) or `"relu6"` (clamp to
[0, 6]). In integer inference the activation is the output clamp
`[max(qmin, Z), min(qmax, Z + round(6/S))]`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "FusedAdd",
    "FusedConv2d",
    "FusedLinear",
    "activation_range",
    "apply_activation",
    "compose_activations",
]

ACTIVATIONS = (None, "relu", "relu6")
_RANGES = {None: None, "relu": (0.0, None), "relu6": (0.0, 6.0)}


def _check_activation(activation: str | None) -> str | None:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return activation


def apply_activation(x: torch.Tensor, activation: str | None) -> torch.Tensor:
    """`x` clamped by `activation`: identity, relu = max(x, 0), relu6 = min(max(x, 0), 6)."""
    if activation == "relu":
        return F.relu(x)
    if activation == "relu6":
        return F.relu6(x)
    return x


def activation_range(activation: str | None) -> tuple[float, float | None] | None:
    """The clamp `(low, high)` of an activation (`high` None = unbounded); None for identity."""
    return _RANGES[_check_activation(activation)]


def compose_activations(first: str | None, then: str | None) -> str | None:
    """The single activation equal to applying `first` then `then` (relu∘relu6 = relu6)."""
    pair = {_check_activation(first), _check_activation(then)} - {None}
    if "relu6" in pair:
        return "relu6"
    return "relu" if pair else None


class _Fused(nn.Module):
    """Shared part of the fused modules: the activation tag and its clamp range."""

    def __init__(self, activation: str | None) -> None:
        super().__init__()
        self.activation = _check_activation(activation)

    @property
    def activation_range(self) -> tuple[float, float | None] | None:
        """Output clamp of the fused op, see `activation_range`."""
        return activation_range(self.activation)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class FusedConv2d(_Fused):
    """conv -> [BatchNorm2d] -> [relu | relu6] as one op (`bn` is None once folded)."""

    def __init__(
        self, conv: nn.Conv2d, bn: nn.BatchNorm2d | None = None, activation: str | None = None
    ) -> None:
        super().__init__(activation)
        self.conv = conv
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.bn is not None:
            y = self.bn(y)
        return apply_activation(y, self.activation)


class FusedLinear(_Fused):
    """linear -> [BatchNorm1d] -> [relu | relu6] as one op (`bn` is None once folded)."""

    def __init__(
        self, linear: nn.Linear, bn: nn.BatchNorm1d | None = None, activation: str | None = None
    ) -> None:
        super().__init__(activation)
        self.linear = linear
        self.bn = bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        if self.bn is not None:
            y = self.bn(y)
        return apply_activation(y, self.activation)


class FusedAdd(_Fused):
    """Elementwise add of two tensors -> [relu | relu6] as one op."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return apply_activation(a + b, self.activation)
