"""Random-resized crops of a photograph (torchvision's ``RandomResizedCrop`` algorithm).

A crop covers a random fraction of the photograph's area in ``[0.25, 1]`` with aspect ratio
``w/h`` log-uniform in ``[3/4, 4/3]`` (10 tries, then the largest centered crop with an
allowed aspect ratio), is resized to ``H x W`` (bilinear, antialiased) and flipped left-right
with probability 1/2. All randomness comes from the ``numpy.random.Generator`` passed in, so a
seeded generator gives the same crops on every run and machine.
"""

import math

import numpy as np
from PIL import Image

__all__ = ["crop_params_random_resized", "random_resized_crop"]

_AREA_FRACTION = (0.25, 1.0)
_ASPECT_RATIO = (3 / 4, 4 / 3)


def crop_params_random_resized(
    height: int, width: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a crop covering a random fraction of the area in
    ``[0.25, 1]`` with aspect ratio ``w/h`` log-uniform in ``[3/4, 4/3]``; 10 tries,
    then the largest centered crop with an allowed aspect ratio (torchvision's algorithm)."""
    area = height * width
    log_lo, log_hi = math.log(_ASPECT_RATIO[0]), math.log(_ASPECT_RATIO[1])
    for _ in range(10):
        target_area = area * rng.uniform(*_AREA_FRACTION)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    return _center_crop_params(height, width)


def _center_crop_params(height: int, width: int) -> tuple[int, int, int, int]:
    ratio = width / height
    if ratio < _ASPECT_RATIO[0]:
        w, h = width, round(width / _ASPECT_RATIO[0])
    elif ratio > _ASPECT_RATIO[1]:
        w, h = round(height * _ASPECT_RATIO[1]), height
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(image: Image.Image, height: int, width: int,
                        rng: np.random.Generator) -> np.ndarray:
    """One ``height x width`` crop of ``image`` as uint8 (H, W, channels of the image's mode),
    flipped left-right with probability 1/2."""
    top, left, h, w = crop_params_random_resized(image.height, image.width, rng)
    crop = image.resize((width, height), Image.Resampling.BILINEAR,
                        box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    pixels = np.asarray(crop)
    return pixels.reshape(height, width, -1)
