"""MobileNet-v2 for Fashion-MNIST: inverted residual blocks with linear bottlenecks."""

import torch
from torch import nn

from intq.zoo.models._blocks import conv_bn

__all__ = ["InvertedResidual", "MobileNetV2", "mobilenet_v2_fmnist"]

# (expansion, output channels, repeats, first stride); the stride-2 stem gives 14x14, then 7x7.
_STAGES = ((1, 16, 1, 1), (4, 24, 1, 1), (4, 32, 3, 2), (4, 64, 1, 1))


class InvertedResidual(nn.Module):
    """1x1 expansion (ReLU6) -> depthwise 3x3 (ReLU6) -> linear 1x1 projection, plus the
    input (``+``) when stride is 1 and the channel count is unchanged."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        layers = [] if expansion == 1 else [conv_bn(in_ch, hidden, 1, act=nn.ReLU6)]
        layers += [
            conv_bn(hidden, hidden, 3, stride=stride, groups=hidden, act=nn.ReLU6),
            conv_bn(hidden, out_ch, 1, act=None),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.residual:
            return x + self.block(x)
        return self.block(x)


class MobileNetV2(nn.Module):
    """Stride-2 stem 3x3 conv, inverted residual stages, 1x1 head conv (ReLU6), global average pool,
    linear classifier."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, stem: int = 16, head: int = 256
    ) -> None:
        super().__init__()
        layers = [conv_bn(in_channels, stem, 3, stride=2, act=nn.ReLU6)]
        ch = stem
        for expansion, out_ch, repeats, stride in _STAGES:
            for i in range(repeats):
                layers.append(InvertedResidual(ch, out_ch, stride if i == 0 else 1, expansion))
                ch = out_ch
        layers.append(conv_bn(ch, head, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2_fmnist() -> MobileNetV2:
    """The zoo's ``mobilenet-v2-fmnist`` architecture (untrained)."""
    return MobileNetV2()
