"""ResNet for Fashion-MNIST: basic blocks, add then ReLU, 1x1 downsample shortcuts."""

import torch
from torch import nn

from intq.zoo.models._blocks import conv_bn

__all__ = ["BasicBlock", "ResNet", "resnet_fmnist"]

# (output channels, first stride) of each stage of two basic blocks;
# the stride-2 stem gives 14x14, then 7x7.
_STAGES = ((32, 1), (64, 2))


class BasicBlock(nn.Module):
    """``relu(bn(conv3x3(relu(bn(conv3x3(x))))) + shortcut(x))``; the shortcut is identity or
    a strided 1x1 conv-BN when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_ch, out_ch, 3, stride=stride)
        self.conv2 = conv_bn(out_ch, out_ch, 3, act=None)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_ch == out_ch
            else conv_bn(in_ch, out_ch, 1, stride=stride, act=None)
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class ResNet(nn.Module):
    """Stride-2 stem 3x3 conv-BN-ReLU, stages of basic blocks, global average pool, linear."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, blocks: int = 2) -> None:
        super().__init__()
        ch = 32
        layers: list[nn.Module] = [conv_bn(in_channels, ch, 3, stride=2)]
        for out_ch, stride in _STAGES:
            for i in range(blocks):
                layers.append(BasicBlock(ch, out_ch, stride if i == 0 else 1))
                ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def resnet_fmnist() -> ResNet:
    """The zoo's ``resnet-fmnist`` architecture (ResNet-10-like, untrained)."""
    return ResNet()
