"""Pixel normalization ``x = (pixel/255 - mean[c]) / std[c]``: what each model expects.

A model is trained with one input normalization, and quantization must calibrate and
evaluate it with the same one. ImageNet's per-channel statistics suit torchvision-style
models; the TensorFlow edge models (EfficientNet-Lite, MobileNets) were trained on
``(pixel - 127) / 128`` ("inception" style), which maps the 8-bit pixel grid onto an 8-bit
quantizer grid exactly (scale 1/128, zero point 127), so the input quantizer loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from intq.errors import IntqError
from intq.zoo.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD

__all__ = [
    "FASHION_MNIST",
    "IMAGENET",
    "INCEPTION",
    "NORMALIZATIONS",
    "Normalization",
    "default_normalization",
]


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``mean`` and ``std`` on the [0, 1] pixel scale."""

    name: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def channels(self) -> int:
        return len(self.mean)

    def apply(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, C) -> float32 (N, C, H, W), ``(pixel/255 - mean[c]) / std[c]``."""
        if pixels.shape[-1] != self.channels:
            raise IntqError(f"{self.name} normalization is for {self.channels}-channel images, "
                            f"got {pixels.shape[-1]} channels")
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().to(torch.float32)
        shape = (1, self.channels, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(shape)
        std = torch.tensor(self.std, dtype=torch.float32).view(shape)
        return x.div_(255.0).sub_(mean).div_(std)


IMAGENET = Normalization("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
INCEPTION = Normalization("inception", (127 / 255,) * 3, (128 / 255,) * 3)
FASHION_MNIST = Normalization("fashion-mnist", (FASHION_MNIST_MEAN,), (FASHION_MNIST_STD,))
NORMALIZATIONS = {n.name: n for n in (IMAGENET, INCEPTION, FASHION_MNIST)}


def default_normalization(channels: int) -> Normalization:
    """ImageNet for 3-channel images, Fashion-MNIST's for 1 channel."""
    if channels == 3:
        return IMAGENET
    if channels == 1:
        return FASHION_MNIST
    raise IntqError(
        f"images can only feed models with 1 or 3 input channels, not {channels}; "
        "give preprocessed inputs as a .npy file instead"
    )
