"""Conv + BatchNorm (+ReLU/ReLU6) folded for quantization-aware training (PAPER.md 3).

With batch statistics ``μ_B, σ_B``, moving statistics ``μ, σ`` (``σ = sqrt(var + eps)``),
conv bias ``b`` and ``c = σ_B/σ`` per output channel:

    corrected, before the BN freeze:   y = conv(Q(γW/σ), x) / c + β - γμ_B/σ_B
    naive,     before the BN freeze:   y = conv(Q(γW/σ_B), x)   + β - γμ_B/σ_B
    after the freeze, and in eval:     y = conv(Q(γW/σ), x)     + β + γ(b - μ)/σ

followed by the fused activation. Before the freeze the moving statistics are updated as
``nn.BatchNorm2d`` does (momentum, unbiased batch variance) and the gradient flows through
the batch statistics; after it they stay fixed and the layer computes the inference graph.
The corrected form quantizes the same folded weights ``γW/σ`` that inference uses, so the
weights do not jitter with batch statistics; the naive form quantizes ``γW/σ_B``.

Where the batch statistics come from (corrected form):
- ``exact_batch_stats=True``: from the float ``conv(W, x) + b``, the paper's training graph;
  this costs a second convolution (forward and backward) per layer.
- ``exact_batch_stats=False`` (default): from ``z = conv(Q(γW/σ), x)·σ/γ + b``, the quantized
  conv mapped back to the scale of ``conv(W, x) + b`` (torch.ao's approximate form), computed
  as ``conv(Q(γW/σ)·σ/γ, x) + b`` (the per-channel factor on the small weight tensor, not on
  the activations: the same value up to float rounding, a full pass less each way). Then
  ``y = γ(z - μ_B)/σ_B + β`` is the corrected formula above with the statistics of ``z``,
  and one native ``batch_norm`` computes it: a step costs one convolution, as in float.
  ``z`` differs from ``conv(W, x) + b`` only by the weight quantization error. A channel
  with ``γ = 0`` has ``Q(γW/σ) = 0``; its ``z`` is the bias alone and its output ``β``.
The naive form needs ``σ_B`` before its quantized conv, so it always takes the float conv.

In eval mode the bias is rounded onto the int32 grid ``S_in·S_w`` as in ``QuantConv2d``,
so ``to_quant_conv()`` (the deployable layer) computes exactly what eval mode computes.
In a ``torch.distributed`` run, ``sync_batch_stats=True`` averages the batch moments over
all ranks (a differentiable all-reduce), so every rank normalizes with the global batch.

``move_activation_into(quantizer)`` hands the ReLU/ReLU6 to the activation quantizer that is
the only consumer of the output (``Quantizer.input_clamp``): the layer then returns the
pre-activation and the quantizer clamps once for both, which saves a pass over the output
forward and one backward per layer. The graph computes the same values and gradients.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from intq.fakequant import Quantizer
from intq.graph.fused import FusedConv2d, activation_range, apply_activation
from intq.graph.qmodules import QuantConv2d, simulate_int32_bias

__all__ = ["QATConvBn2d"]


def _inverse(scale: torch.Tensor) -> torch.Tensor:
    """1/scale, and 0 (with a zero, not NaN, gradient) where scale is 0 (γ = 0)."""
    dead = scale == 0
    if not bool(dead.any()):
        return scale.reciprocal()
    return torch.where(dead, 0.0, torch.where(dead, 1.0, scale).reciprocal())


class QATConvBn2d(nn.Module):
    """A conv + BatchNorm2d (+activation) whose BN is folded for QAT; ``correction=False``
    gives the naive fold with batch statistics (for comparison)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, activation: str | None,
                 weight_quantizer: Quantizer, *, correction: bool = True,
                 exact_batch_stats: bool = False, sync_batch_stats: bool = False) -> None:
        super().__init__()
        if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != conv.out_channels:
            raise ValueError(f"QATConvBn2d: needs a BatchNorm2d over the conv's "
                             f"{conv.out_channels} output channels, got {bn}")
        if not bn.track_running_stats:
            raise ValueError("QATConvBn2d: the BatchNorm2d must track running statistics "
                             "(track_running_stats=True) to be folded for inference")
        FusedConv2d(conv, None, activation)  # validates the activation tag
        self.conv, self.bn, self.activation = conv, bn, activation
        self.weight_quantizer = weight_quantizer
        self.correction = correction
        self.exact_batch_stats = exact_batch_stats
        self.sync_batch_stats = sync_batch_stats
        self.register_buffer("bn_frozen_enabled", torch.tensor(False))
        self._input_quantizer: Quantizer | None = None
        self._output_quantizer: Quantizer | None = None

    # ------------------------------------------------------------------------- switches
    @property
    def bn_frozen(self) -> bool:
        """Moving statistics fixed and the inference graph computed, also in training."""
        return bool(self.bn_frozen_enabled)

    @bn_frozen.setter
    def bn_frozen(self, value: bool) -> None:
        self.bn_frozen_enabled.fill_(bool(value))

    @property
    def float_conv_stats(self) -> bool:
        """Batch statistics from a second, float conv (paper-exact or naive fold)."""
        return self.exact_batch_stats or not self.correction

    def bind_input_quantizer(self, quantizer: Quantizer | None) -> None:
        """Use ``quantizer``'s scale as S_in for the int32 bias grid (not a submodule)."""
        object.__setattr__(self, "_input_quantizer", quantizer)

    @property
    def input_quantizer(self) -> Quantizer | None:
        return self._input_quantizer

    def move_activation_into(self, quantizer: Quantizer) -> None:
        """Let ``quantizer``, the only consumer of this layer's output, apply the activation
        (its ``input_clamp``); forward then returns the output before the activation."""
        if self.activation is None:
            raise ValueError("QATConvBn2d: there is no activation to move")
        low, high = activation_range(self.activation)
        quantizer.input_clamp = (low, math.inf if high is None else high)
        object.__setattr__(self, "_output_quantizer", quantizer)

    def restore_activation(self) -> None:
        """Undo ``move_activation_into``: the layer applies its activation again."""
        if self._output_quantizer is not None:
            self._output_quantizer.input_clamp = None
            object.__setattr__(self, "_output_quantizer", None)

    @property
    def activation_moved(self) -> bool:
        """The activation is applied by the output quantizer (``move_activation_into``)."""
        return self._output_quantizer is not None

    # -------------------------------------------------------------------------- compute
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.bn_frozen:
            y = (self._float_stats_forward(x) if self.float_conv_stats
                 else self._quantized_stats_forward(x))
        else:
            weight, bias = self.folded_parameters()
            weight = self.weight_quantizer(weight)
            if not self.training:
                bias = self._simulated_bias(bias)
            y = self._conv(x, weight, bias)
        return y if self._output_quantizer is not None else apply_activation(y, self.activation)

    def folded_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Inference fold with the moving statistics: ``(γW/σ, β + γ(b - μ)/σ)``."""
        gamma, beta = self._affine()
        scale = gamma / self._moving_sigma()
        weight = self.conv.weight * scale.reshape(-1, 1, 1, 1)
        return weight, beta + (self._conv_bias() - self.bn.running_mean) * scale

    @torch.no_grad()
    def to_quant_conv(self) -> QuantConv2d:
        """The equivalent deployable ``QuantConv2d``: inference-folded weights and bias, and a
        copy of the weight quantizer frozen on them (same output as this module in eval,
        activation included also when it was moved into the output quantizer)."""
        weight, bias = (t.detach().clone() for t in self.folded_parameters())
        conv = copy.deepcopy(self.conv)
        conv.weight = nn.Parameter(weight)
        conv.bias = nn.Parameter(bias)
        quantizer = copy.deepcopy(self.weight_quantizer)
        quantizer.frozen = False
        quantizer.observer.reset()
        quantizer.observer.update(weight)
        quantizer.calculate_qparams()
        quantizer.observe, quantizer.frozen = False, True
        layer = QuantConv2d(FusedConv2d(conv, None, self.activation), quantizer)
        layer.bind_input_quantizer(self._input_quantizer)
        return layer.train(self.training)

    def extra_repr(self) -> str:
        fold = "corrected" if self.correction else "naive"
        stats = "float conv" if self.float_conv_stats else "quantized"
        where = " (in the output quantizer)" if self.activation_moved else ""
        return (f"activation={self.activation!r}{where}, fold={fold}, batch_stats={stats}, "
                f"bn_frozen={self.bn_frozen}")

    # ------------------------------------------------------------------------ internals
    def _quantized_stats_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Corrected fold with the statistics of ``z = conv(Q(γW/σ), x)·σ/γ + b``."""
        gamma, beta = self._affine()
        bn, conv = self.bn, self.conv
        scale = (gamma / self._moving_sigma()).reshape(-1, 1, 1, 1)
        z = self._conv(x, self.weight_quantizer(conv.weight * scale) * _inverse(scale), conv.bias)
        if not self.sync_batch_stats:
            bn.num_batches_tracked.add_(1)
            return F.batch_norm(z, bn.running_mean, bn.running_var, gamma, beta, True,
                                self._momentum(), bn.eps)
        mean_b, var_b, count = self._batch_moments(z)
        self._update_moving_stats(mean_b.detach(), var_b.detach(), count, conv_bias=False)
        inv_sigma_b = torch.rsqrt(var_b + bn.eps)
        return ((z - mean_b.reshape(1, -1, 1, 1)) * (gamma * inv_sigma_b).reshape(1, -1, 1, 1)
                + beta.reshape(1, -1, 1, 1))

    def _float_stats_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Corrected or naive fold with the statistics of the float ``conv(W, x)``."""
        gamma, beta = self._affine()
        mean_b, var_b, count = self._batch_moments(self._conv(x, self.conv.weight, None))
        sigma_b = torch.sqrt(var_b + self.bn.eps)
        sigma = self._moving_sigma()
        bias = beta - gamma * mean_b / sigma_b
        self._update_moving_stats(mean_b.detach(), var_b.detach(), count)
        if not self.correction:
            weight = self.conv.weight * (gamma / sigma_b).reshape(-1, 1, 1, 1)
            return self._conv(x, self.weight_quantizer(weight), bias)
        weight = self.conv.weight * (gamma / sigma).reshape(-1, 1, 1, 1)
        c = (sigma_b / sigma).reshape(1, -1, 1, 1)
        return self._conv(x, self.weight_quantizer(weight), None) / c + bias.reshape(1, -1, 1, 1)

    def _batch_moments(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-channel mean and biased variance of ``y`` over (N, H, W), and the count;
        over all ranks' batches when ``sync_batch_stats`` (equal batch sizes)."""
        count = y.numel() // y.shape[1]
        if not self.sync_batch_stats:
            var, mean = torch.var_mean(y, dim=(0, 2, 3), unbiased=False)
            return mean, var, count
        import torch.distributed as dist
        from torch.distributed.nn.functional import all_reduce

        world = dist.get_world_size()
        moments = all_reduce(torch.stack([y.mean((0, 2, 3)), (y * y).mean((0, 2, 3))])) / world
        mean = moments[0]
        return mean, (moments[1] - mean * mean).clamp_min(0.0), count * world

    @torch.no_grad()
    def _update_moving_stats(self, mean_b: torch.Tensor, var_b: torch.Tensor, count: int,
                             conv_bias: bool = True) -> None:
        """``nn.BatchNorm2d``'s update: EMA with ``momentum`` of the batch mean (plus the
        conv bias when ``mean_b`` excludes it) and of the unbiased batch variance."""
        bn = self.bn
        bn.num_batches_tracked.add_(1)
        momentum = self._momentum()
        unbiased = var_b * count / max(count - 1, 1)
        offset = self._conv_bias().detach() if conv_bias else 0.0
        bn.running_mean.lerp_(mean_b + offset, momentum)
        bn.running_var.lerp_(unbiased, momentum)

    def _moving_sigma(self) -> torch.Tensor:
        """σ = sqrt(running_var + eps)."""
        return torch.sqrt(self.bn.running_var + self.bn.eps)

    def _momentum(self) -> float:
        """``nn.BatchNorm2d``'s EMA factor; cumulative average when ``momentum`` is None
        (call after counting the batch)."""
        bn = self.bn
        return bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        c = self.conv
        return F.conv2d(x, weight, bias, c.stride, c.padding, c.dilation, c.groups)

    def _affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn
        gamma = bn.weight if bn.weight is not None else torch.ones_like(bn.running_var)
        beta = bn.bias if bn.bias is not None else torch.zeros_like(bn.running_var)
        return gamma, beta

    def _conv_bias(self) -> torch.Tensor:
        bias = self.conv.bias
        return bias if bias is not None else torch.zeros_like(self.bn.running_mean)

    def _simulated_bias(self, bias: torch.Tensor) -> torch.Tensor:
        q_in, q_w = self._input_quantizer, self.weight_quantizer
        if q_in is None or not q_in.fake_quant or not q_w.fake_quant:
            return bias
        return simulate_int32_bias(bias, q_in.scale, q_w.scale)
