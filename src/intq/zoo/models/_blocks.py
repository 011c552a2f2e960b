"""Shared conv-BN-activation building block of the Fashion-MNIST zoo models."""

from torch import nn

__all__ = ["conv_bn"]


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int,
    *,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """``Conv2d(bias=False, padding=kernel//2) -> BatchNorm2d -> act()`` (no act if ``None``)."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)
