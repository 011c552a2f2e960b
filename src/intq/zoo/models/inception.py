"""Inception for Fashion-MNIST: parallel 1x1 / 3x3 / double-3x3 / pool-projection branches
joined by ``torch.cat``."""

import torch
from torch import nn

from intq.zoo.models._blocks import conv_bn

__all__ = ["InceptionBlock", "InceptionNet", "inception_fmnist"]


class InceptionBlock(nn.Module):
    """Four branches concatenated on channels: 1x1; 1x1 -> 3x3; 1x1 -> 3x3 -> 3x3 (a 5x5
    receptive field); 3x3 max pool -> 1x1 projection. Every conv is conv-BN-ReLU."""

    def __init__(self, in_ch: int, b1: int, b3: int, b5: int, bp: int) -> None:
        super().__init__()
        self.branch1 = conv_bn(in_ch, b1, 1)
        self.branch3 = nn.Sequential(conv_bn(in_ch, b3, 1), conv_bn(b3, b3, 3))
        self.branch5 = nn.Sequential(conv_bn(in_ch, b5, 1), conv_bn(b5, b5, 3), conv_bn(b5, b5, 3))
        self.branch_pool = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(in_ch, bp, 1))
        self.out_channels = b1 + b3 + b5 + bp

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch1(x), self.branch3(x), self.branch5(x), self.branch_pool(x))
        return torch.cat(branches, 1)


class InceptionNet(nn.Module):
    """Stride-2 stem 3x3 conv (28 -> 14), inception blocks with a stride-2 max pool (14 -> 7),
    global average pool, linear classifier."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        blocks = [
            InceptionBlock(32, 16, 24, 16, 8),
            nn.MaxPool2d(2),
            InceptionBlock(64, 32, 48, 24, 24),
            InceptionBlock(128, 48, 64, 32, 32),
        ]
        self.features = nn.Sequential(conv_bn(in_channels, 32, 3, stride=2), *blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(blocks[-1].out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def inception_fmnist() -> InceptionNet:
    """The zoo's ``inception-fmnist`` architecture (untrained)."""
    return InceptionNet()
