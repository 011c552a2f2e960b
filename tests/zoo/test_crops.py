"""Random-resized crops: torchvision's algorithm (area, aspect, bounds, fallback), the flip,
the output size and the channels of the image's mode, and determinism under a seed."""

import numpy as np
from PIL import Image

from intq.zoo.crops import crop_params_random_resized, random_resized_crop


def test_crop_params_respect_area_aspect_and_bounds():
    rng = np.random.default_rng(0)
    for height, width in [(512, 512), (300, 451), (1411, 1411), (102, 102)]:
        for _ in range(200):
            top, left, h, w = crop_params_random_resized(height, width, rng)
            assert 0 <= top and top + h <= height and 0 <= left and left + w <= width
            assert 0.25 * 0.9 <= h * w / (height * width) <= 1.0
            assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05


def test_crop_params_fall_back_to_a_centered_crop_on_extreme_shapes():
    rng = np.random.default_rng(0)
    assert crop_params_random_resized(10, 1000, rng) == (0, 493, 10, 13)
    assert crop_params_random_resized(1000, 10, rng) == (493, 0, 13, 10)


def _gradient_image(mode: str, width: int = 64, height: int = 48) -> Image.Image:
    """Pixel (x, y) = 4x + y (mod 256) in every channel: a crop's pixels tell where it came from."""
    values = (4 * np.arange(width)[None, :] + np.arange(height)[:, None]) % 256
    pixels = values.astype(np.uint8)
    if mode == "RGB":
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    return Image.fromarray(pixels, mode)


def test_random_resized_crop_size_channels_and_determinism():
    for mode, channels in (("RGB", 3), ("L", 1)):
        image = _gradient_image(mode)
        first = random_resized_crop(image, 20, 30, np.random.default_rng(7))
        again = random_resized_crop(image, 20, 30, np.random.default_rng(7))
        assert first.shape == (20, 30, channels) and first.dtype == np.uint8
        np.testing.assert_array_equal(first, again)


def test_random_resized_crop_is_the_resized_box_flipped_half_the_time():
    image = _gradient_image("L")
    flips = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        top, left, h, w = crop_params_random_resized(image.height, image.width,
                                                     np.random.default_rng(seed))
        crop = random_resized_crop(image, 16, 16, rng)[..., 0]
        box = (left, top, left + w, top + h)
        expected = np.asarray(image.resize((16, 16), Image.Resampling.BILINEAR, box=box))
        flipped = np.array_equal(crop, expected[:, ::-1]) and not np.array_equal(crop, expected)
        assert flipped or np.array_equal(crop, expected)
        flips += flipped
    assert 8 <= flips <= 32
