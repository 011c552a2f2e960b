"""MobileNet-v1 for Fashion-MNIST: depthwise separable convolutions with BN and ReLU6."""

import torch
from torch import nn

from intq.zoo.models._blocks import conv_bn

__all__ = ["MobileNetV1", "mobilenet_v1_fmnist"]

# (output channels, stride) of each depthwise separable block;
# the stride-2 stem gives 14x14, then 7x7.
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 1))


class MobileNetV1(nn.Module):
    """Stride-2 stem 3x3 conv, then blocks of depthwise 3x3 + pointwise 1x1 (each conv-BN-ReLU6),
    global average pool and a linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, stem: int = 32) -> None:
        super().__init__()
        layers = [conv_bn(in_channels, stem, 3, stride=2, act=nn.ReLU6)]
        ch = stem
        for out_ch, stride in _BLOCKS:
            layers.append(conv_bn(ch, ch, 3, stride=stride, groups=ch, act=nn.ReLU6))
            layers.append(conv_bn(ch, out_ch, 1, act=nn.ReLU6))
            ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v1_fmnist() -> MobileNetV1:
    """The zoo's ``mobilenet-v1-fmnist`` architecture (untrained)."""
    return MobileNetV1()
