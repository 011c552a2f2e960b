"""A conv or linear layer as a grouped matrix product over sampled output positions.

A conv's output at one position is a dot product of each output channel's weights with one
input patch (im2col): with G groups, ``X = unfold(x)`` split into ``X_g`` (G, K, M) columns
(K = C/G·kh·kw values per patch, M sampled positions) and the weight reshaped to
``W_g`` (G, O/G, K),

    y[g·O/G + o, m] = Σ_k W_g[g, o, k]·X_g[g, k, m] + b[g·O/G + o]      (torch.baddbmm)

A linear layer is the case G = 1, K = in_features, one column per sample. Reconstructing a
layer's output on M sampled columns therefore costs one batched matmul, whatever the kernel,
groups or stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from intq.graph.qmodules import QuantConv2d, QuantLinear

__all__ = [
    "columns_at",
    "grouped_weight",
    "layer_groups",
    "patch_rows",
    "sample_columns",
    "ungrouped_weight",
]


def layer_groups(layer: QuantConv2d | QuantLinear) -> int:
    """G: the number of independent input-channel groups (1 for a linear layer)."""
    return layer.layer.groups if isinstance(layer, QuantConv2d) else 1


def patch_rows(layer: QuantConv2d | QuantLinear) -> int:
    """G·K: the values of one input patch over all groups (C·kh·kw, or in_features)."""
    weight = layer.layer.weight
    return weight[0].numel() * layer_groups(layer)


def grouped_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """(O, C/G, kh, kw) or (O, K) -> W_g (G, O/G, K)."""
    return weight.reshape(groups, weight.shape[0] // groups, -1)


def ungrouped_weight(w_g: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """W_g (G, O/G, K) -> the layer's weight shape."""
    return w_g.reshape(shape)


def sample_columns(
    layer: QuantConv2d | QuantLinear, x: torch.Tensor, per_sample: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Input patches of ``per_sample`` random output positions of every sample of ``x`` (the
    layer's input): X_g (G, K, N·P), and the flat positions drawn (N, P) so that another
    input of the same shape (the float model's) can be cut at the same places with
    ``columns_at``. P = min(per_sample, positions per sample)."""
    patches = _patches(layer, x)  # (N, G·K, L)
    n, _, length = patches.shape
    count = min(per_sample, length)
    positions = torch.stack([torch.randperm(length, generator=generator)[:count] for _ in range(n)])
    return columns_at(layer, x, positions, patches), positions


def columns_at(layer: QuantConv2d | QuantLinear, x: torch.Tensor, positions: torch.Tensor,
               patches: torch.Tensor | None = None) -> torch.Tensor:
    """Input patches of ``x`` at the output ``positions`` (N, P): X_g (G, K, N·P)."""
    patches = _patches(layer, x) if patches is None else patches
    n, rows, _ = patches.shape
    index = positions.unsqueeze(1).expand(n, rows, positions.shape[1])
    picked = patches.gather(2, index)  # (N, G·K, P)
    groups = layer_groups(layer)
    return picked.permute(1, 0, 2).reshape(groups, rows // groups, -1)


def _patches(layer: QuantConv2d | QuantLinear, x: torch.Tensor) -> torch.Tensor:
    """(N, G·K, L): every input patch of every sample (L output positions per sample)."""
    if isinstance(layer, QuantLinear):
        features = x.shape[-1]
        return x.reshape(x.shape[0], -1, features).transpose(1, 2)
    conv = layer.layer
    padding = conv.padding
    if isinstance(padding, str):
        if padding != "valid":
            raise ValueError(f"AdaRound: conv padding {padding!r} is not supported")
        padding = 0
    if conv.padding_mode != "zeros":
        raise ValueError(f"AdaRound: conv padding_mode {conv.padding_mode!r} is not supported")
    return F.unfold(x, conv.kernel_size, conv.dilation, padding, conv.stride)
