"""Pixel normalizations against the formula written out in float64."""

import numpy as np
import pytest
import torch

from intq.errors import IntqError
from intq.zoo.normalization import (
    FASHION_MNIST,
    IMAGENET,
    INCEPTION,
    NORMALIZATIONS,
    default_normalization,
)


@pytest.mark.parametrize("norm", [IMAGENET, INCEPTION])
def test_apply_is_pixel_over_255_minus_mean_over_std(norm):
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    x = norm.apply(pixels)
    assert x.shape == (2, 3, 5, 4) and x.dtype == torch.float32
    p = torch.from_numpy(pixels).double().permute(0, 3, 1, 2)
    mean = torch.tensor(norm.mean, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(norm.std, dtype=torch.float64).view(1, 3, 1, 1)
    torch.testing.assert_close(x.double(), (p / 255 - mean) / std, rtol=0, atol=1e-6)


def test_inception_is_pixel_minus_127_over_128():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    x = INCEPTION.apply(pixels).double()
    expected = (torch.arange(256, dtype=torch.float64).reshape(16, 16) - 127) / 128
    torch.testing.assert_close(x[0, 1], expected, rtol=0, atol=2e-7)


def test_defaults_by_channels_and_names():
    assert default_normalization(3) is IMAGENET and default_normalization(1) is FASHION_MNIST
    assert set(NORMALIZATIONS) == {"imagenet", "inception", "fashion-mnist"}
    with pytest.raises(IntqError, match="1 or 3 input channels, not 2"):
        default_normalization(2)


def test_channel_mismatch_is_a_clear_error():
    with pytest.raises(IntqError, match="for 3-channel images, got 1 channels"):
        IMAGENET.apply(np.zeros((1, 2, 2, 1), dtype=np.uint8))
