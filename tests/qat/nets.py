"""Small float nets the QAT tests train."""

import torch
from torch import nn


def trained_looking_net() -> nn.Module:
    """A small trained-looking float CNN: random weights, BN statistics from real batches."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )
    net.train()
    with torch.no_grad():
        for _ in range(20):
            net(torch.randn(32, 3, 12, 12))
    return net.eval()
