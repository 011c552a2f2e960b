"""Bias correction for weight quantization (Nagel et al. 2019, "Data-Free Quantization").

Quantizing weights shifts each output channel's mean: E[y_q - y] = Σ_{c,k} ΔW[o,c,k]·E[x_c]
with ΔW = Q(W) - W. With the per-channel input means E[x_c] measured on calibration data,
subtracting that shift from the bias removes the systematic part of the error (zero padding
at the borders is ignored: the correction is exact for the interior of the feature map).
"""

from __future__ import annotations

import torch
from torch import nn

from intq.graph.qmodules import QuantConv2d, QuantLinear

__all__ = ["InputMeans", "correct_bias"]


class InputMeans:
    """Running per-channel (dim 1) mean of a layer's input: fed by ``add``, or by a forward
    pre-hook on ``layer`` when one is given (``remove`` detaches it)."""

    def __init__(self, layer: QuantConv2d | QuantLinear | None = None) -> None:
        self.total: torch.Tensor | None = None
        self.count = 0
        self._hook = None if layer is None else layer.register_forward_pre_hook(
            lambda _module, args: self.add(args[0])
        )

    def add(self, x: torch.Tensor) -> None:
        """Fold a batch in: float32 sums over each sample's positions (fast, contiguous),
        float64 across samples."""
        x = x.detach()
        per_sample = x.flatten(2).sum(dim=2) if x.dim() > 2 else x
        self.add_sums(per_sample.sum(dim=0, dtype=torch.float64), x.numel() // x.shape[1])

    def add_sums(self, sums: torch.Tensor, count: int) -> None:
        """Fold in per-channel sums (C,) over ``count`` values per channel."""
        total = sums.double()
        self.total = total if self.total is None else self.total + total
        self.count += count

    def mean(self) -> torch.Tensor:
        """E[x_c] over everything seen so far."""
        if self.total is None:
            raise ValueError("InputMeans: the layer never ran; no input mean to use")
        return self.total / self.count

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()


def correct_bias(layer: QuantConv2d | QuantLinear, input_mean: torch.Tensor) -> None:
    """Subtract the expected output shift of the weight quantization from ``layer``'s bias."""
    w = getattr(layer, "float_weight", layer.layer.weight).detach().double()
    with torch.no_grad():
        dw = layer.quantized_weight().double() - w
    shift = _output_shift(layer, dw, input_mean)
    bias = layer.layer.bias
    if not hasattr(layer, "float_bias"):  # the float model's bias, for fake-quant-off runs
        original = torch.zeros_like(shift, dtype=w.dtype).float() if bias is None else bias
        layer.register_buffer("float_bias", original.detach().clone())
    if bias is None:
        layer.layer.bias = nn.Parameter(-shift.to(w.dtype).float())
    else:
        with torch.no_grad():
            bias.copy_((bias.double() - shift).to(bias.dtype))


def _output_shift(layer, dw: torch.Tensor, input_mean: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, QuantLinear):
        return dw @ input_mean
    groups = layer.layer.groups
    out_channels, in_per_group = dw.shape[:2]
    per_tap = dw.sum(dim=(2, 3))  # (O, C/groups)
    means = input_mean.reshape(groups, in_per_group)
    group_of = torch.arange(out_channels) // (out_channels // groups)
    return (per_tap * means[group_of]).sum(dim=1)
