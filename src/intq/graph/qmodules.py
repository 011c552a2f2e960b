"""Simulated-quantized layers: a fused conv/linear whose folded weights are fake-quantized.

    QuantConv2d(x) = act(conv(x, Q_w(W), b_sim)),  b_sim = round_half_even(b / (S_in·S_w))·S_in·S_w

The bias is not fake-quantized to the weight grid: it is rounded to the int32 grid of scale
``S_in·S_w[c]`` (zero point 0) that integer inference adds to the accumulator (PAPER.md 4),
so the simulation carries the bias's own rounding error. ``S_in`` comes from the quantizer of
the layer's input; without one (weight-only PTQ) the bias stays float.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from intq.fakequant import Quantizer
from intq.graph.fused import FusedConv2d, FusedLinear, apply_activation
from intq.qmath import round_half_even

__all__ = ["QuantConv2d", "QuantLinear", "simulate_int32_bias"]

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def simulate_int32_bias(
    bias: torch.Tensor, input_scale: torch.Tensor, weight_scale: torch.Tensor
) -> torch.Tensor:
    """``bias`` rounded half-to-even onto the int32 grid of scale ``S_in·S_w`` and back; the
    gradient passes straight through (the bias of a quantized graph stays trainable)."""
    scale = (input_scale.double() * weight_scale.double()).to(bias.device)
    q = round_half_even(bias.detach().double() / scale).clamp(_INT32_MIN, _INT32_MAX)
    return (q * scale).to(bias.dtype) + (bias - bias.detach())


class _QuantLayer(nn.Module):
    """Shared part: the weight quantizer and the (unregistered) input quantizer reference."""

    def __init__(self, activation: str | None, weight_quantizer: Quantizer) -> None:
        super().__init__()
        self.activation = activation
        self.weight_quantizer = weight_quantizer
        self._input_quantizer: Quantizer | None = None

    def bind_input_quantizer(self, quantizer: Quantizer | None) -> None:
        """Use ``quantizer``'s scale as S_in for the int32 bias grid (not a submodule)."""
        object.__setattr__(self, "_input_quantizer", quantizer)

    @property
    def input_quantizer(self) -> Quantizer | None:
        return self._input_quantizer

    def quantized_weight(self) -> torch.Tensor:
        """Q_w(W); with weight fake quant off, the float model's weight (``float_weight``, kept
        by AdaRound when it puts W on the grid) if there is one."""
        float_weight = getattr(self, "float_weight", None)
        if float_weight is not None and not self.weight_quantizer.fake_quant:
            return float_weight
        return self.weight_quantizer(self.layer.weight)

    def simulated_bias(self) -> torch.Tensor | None:
        """The bias on the int32 grid; with weight fake quant off, the float model's bias
        (``float_bias``, kept by bias correction), so switching quantization off gives the
        float model back."""
        if not self.weight_quantizer.fake_quant:
            return getattr(self, "float_bias", self.layer.bias)
        bias = self.layer.bias
        q_in = self._input_quantizer
        if bias is None or q_in is None or not q_in.fake_quant:
            return bias
        return simulate_int32_bias(bias, q_in.scale, self.weight_quantizer.effective_scale)

    def extra_repr(self) -> str:
        return f"activation={self.activation!r}"


class QuantConv2d(_QuantLayer):
    """A ``FusedConv2d`` (BN folded) with fake-quantized weights and int32-grid bias."""

    def __init__(self, fused: FusedConv2d, weight_quantizer: Quantizer) -> None:
        if fused.bn is not None:
            raise ValueError("QuantConv2d needs a folded FusedConv2d (bn must be None)")
        super().__init__(fused.activation, weight_quantizer)
        self.layer = fused.conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.layer
        y = F.conv2d(
            x, self.quantized_weight(), self.simulated_bias(), c.stride, c.padding, c.dilation,
            c.groups,
        )
        return apply_activation(y, self.activation)


class QuantLinear(_QuantLayer):
    """A ``FusedLinear`` (BN folded) with fake-quantized weights and int32-grid bias."""

    def __init__(self, fused: FusedLinear, weight_quantizer: Quantizer) -> None:
        if fused.bn is not None:
            raise ValueError("QuantLinear needs a folded FusedLinear (bn must be None)")
        super().__init__(fused.activation, weight_quantizer)
        self.layer = fused.linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.quantized_weight(), self.simulated_bias())
        return apply_activation(y, self.activation)
