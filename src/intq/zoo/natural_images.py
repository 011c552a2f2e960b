"""Natural photographs bundled with scikit-image and matplotlib, as ImageNet-preprocessed crops.

No labels: the photographs feed calibration and let float and integer models be compared.
Each sample is a random-resized crop (torchvision's ``RandomResizedCrop`` algorithm, area
fraction in ``[0.25, 1]``, aspect ratio in ``[3/4, 4/3]``) of one photograph, resized to
224x224 (bilinear, antialiased) as 8-bit pixels, flipped horizontally with probability 1/2
and normalized as the model expects (``intq.zoo.normalization``; ImageNet statistics by
default, ``(pixel - 127) / 128`` for EfficientNet-Lite0). Every split draws from
its own seeded ``numpy.random.Generator``, so crop ``i`` of a split is the same on every
run and machine, and ``n`` samples are a prefix of ``n + 1``.
"""

import functools
import math
from importlib import resources

import numpy as np
from PIL import Image

from intq.errors import IntqError
from intq.zoo.dataset import Dataset
from intq.zoo.normalization import IMAGENET, Normalization

__all__ = [
    "NATURAL_IMAGES_SHAPE",
    "NATURAL_IMAGE_SPLITS",
    "PHOTOGRAPHS",
    "crop_params_random_resized",
    "load_natural_images",
]

NATURAL_IMAGES_SHAPE = (3, 224, 224)
# Split name -> (seed, default number of crops). Distinct seeds give disjoint crop streams.
NATURAL_IMAGE_SPLITS = {"calibration": (20180601, 256), "evaluation": (20180602, 512)}
# (package, file) of every photograph used. Only files shipped inside the installed wheels:
# scikit-image's other datasets need a download (pooch) and are left out, as are its
# synthetic images (chessboard, phantom, logo, text, ...) and matplotlib's clip art.
PHOTOGRAPHS = (
    ("skimage", "astronaut.png"),
    ("skimage", "brick.png"),
    ("skimage", "camera.png"),
    ("skimage", "cell.png"),
    ("skimage", "chelsea.png"),
    ("skimage", "clock_motion.png"),
    ("skimage", "coffee.png"),
    ("skimage", "coins.png"),
    ("skimage", "grass.png"),
    ("skimage", "gravel.png"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "ihc.png"),
    ("skimage", "moon.png"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "motorcycle_right.png"),
    ("skimage", "retina.jpg"),
    ("skimage", "rocket.jpg"),
    ("matplotlib", "grace_hopper.jpg"),
)
_AREA_FRACTION = (0.25, 1.0)
_ASPECT_RATIO = (3 / 4, 4 / 3)


def load_natural_images(
    split: str = "evaluation", n: int | None = None, normalization: Normalization = IMAGENET
) -> Dataset:
    """``n`` crops (default 256 for 'calibration', 512 for 'evaluation') as (n,3,224,224)
    float32 normalized with ``normalization``, without labels."""
    if split not in NATURAL_IMAGE_SPLITS:
        raise IntqError(
            f"unknown natural-images split {split!r}; use one of {', '.join(NATURAL_IMAGE_SPLITS)}"
        )
    seed, default_n = NATURAL_IMAGE_SPLITS[split]
    n = default_n if n is None else n
    if n < 1:
        raise IntqError(f"natural-images: the number of samples must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    photos = _photographs()
    pixels = np.stack([_random_crop(photos[i % len(photos)], rng) for i in range(n)])
    return Dataset(f"natural-images:{split}", normalization.apply(pixels))


def crop_params_random_resized(
    height: int, width: int, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a crop covering a random fraction of the area in
    ``[0.25, 1]`` with aspect ratio ``w/h`` log-uniform in ``[3/4, 4/3]``; 10 tries, then
    the largest centered crop with an allowed aspect ratio (torchvision's algorithm)."""
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


def _random_crop(photo: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """One 224x224 RGB uint8 (H, W, 3) crop, flipped left-right with probability 1/2."""
    top, left, h, w = crop_params_random_resized(photo.height, photo.width, rng)
    size = NATURAL_IMAGES_SHAPE[1:][::-1]
    crop = photo.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop)


@functools.lru_cache(maxsize=1)
def _photographs() -> tuple[Image.Image, ...]:
    """The decoded photographs as RGB images (grayscale ones replicated to 3 channels)."""
    return tuple(_open_rgb(package, name) for package, name in PHOTOGRAPHS)


def _open_rgb(package: str, name: str) -> Image.Image:
    folder = {"skimage": "data", "matplotlib": "mpl-data/sample_data"}[package]
    path = resources.files(package).joinpath(f"{folder}/{name}")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:
        raise IntqError(
            f"natural-images: cannot read {name} from the installed {package} package "
            f"({exc}); reinstall it with './run setup'"
        ) from None
