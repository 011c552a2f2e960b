"""Small CNNs for the PTQ and conversion tests: a float fallback region, dead channels, a
ceil-mode max pool. The families of tests/graph/nets.py cover the ordinary spellings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from graph.helpers import fashion_mnist_batch
from torch import nn


def images(n: int = 8) -> torch.Tensor:
    """The first ``n`` Fashion-MNIST test images, normalized, (n, 1, 28, 28)."""
    return fashion_mnist_batch(n)


class SigmoidGate(nn.Module):
    """x·sigmoid(x): a table lookup and a product in integers; a float island as a leaf."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SigmoidGateNet(nn.Module):
    """conv -> sigmoid gate -> conv+ReLU -> flatten -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.gate = SigmoidGate()
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1)
        self.fc = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(self.gate(self.conv1(x))))
        return self.fc(torch.flatten(x, 1))


class SigmoidGatePoolNet(SigmoidGateNet):
    """SigmoidGateNet with a global average pool after the float region (shape opaque there)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.gate(self.conv1(x)), 1)
        return self.fc(torch.flatten(x, 1))


class DeadChannelNet(nn.Module):
    """conv+BN+ReLU twice and a linear head; ``kill(gamma)`` sets BN γ of channels 1 and 2 of
    the second conv (the paper's dead channels: weights γW/σ ≈ 0, bias β - γμ/σ = β)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))

    def kill(self, gamma: float, channels: tuple[int, ...] = (1, 2)) -> DeadChannelNet:
        with torch.no_grad():
            for c in channels:
                self.bn2.weight[c] = gamma
                self.bn2.bias[c] = 0.75 + 0.25 * c
        return self


class CeilPoolNet(nn.Module):
    """Max pools in ceil mode on odd sizes (torchvision's GoogLeNet spelling)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.conv(x)))                    # 26 -> 13 (floor mode: 12)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, ceil_mode=True)  # 13 -> 7 (floor: 6)
        return self.fc(torch.flatten(x, 1))


def seeded(cls: type[nn.Module], seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls().eval()


class PaddedNet(nn.Module):
    """Explicit zero pads before convs ("same" padding as EfficientNet spells it), the second
    asymmetric before a stride-2 depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, groups=8)
        self.fc = nn.Linear(8 * 14 * 14, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn1(self.conv1(F.pad(x, (1, 1, 1, 1)))))
        x = F.relu(self.conv2(F.pad(x, (0, 1, 0, 1))))
        return self.fc(torch.flatten(x, 1))
