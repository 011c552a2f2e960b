"""Natural photographs bundled with scikit-image and matplotlib, as ImageNet-preprocessed crops.

No labels: the photographs feed calibration and let float and integer models be compared.
Each sample is a random-resized crop (``intq.zoo.crops``: torchvision's ``RandomResizedCrop``
algorithm, flipped horizontally with probability 1/2) of one photograph, 224x224 8-bit pixels,
normalized as the model expects (``intq.zoo.normalization``; ImageNet statistics by
default, ``(pixel - 127) / 128`` for EfficientNet-Lite0). Every split draws from
its own seeded ``numpy.random.Generator``, so crop ``i`` of a split is the same on every
run and machine, and ``n`` samples are a prefix of ``n + 1``.
"""

import functools
from importlib import resources

import numpy as np
from PIL import Image

from intq.errors import IntqError
from intq.zoo.crops import random_resized_crop
from intq.zoo.dataset import Dataset
from intq.zoo.normalization import IMAGENET, Normalization

__all__ = [
    "NATURAL_IMAGES_SHAPE",
    "NATURAL_IMAGE_SPLITS",
    "PHOTOGRAPHS",
    "load_natural_images",
    "photographs",
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
    photos = photographs()
    height, width = NATURAL_IMAGES_SHAPE[1:]
    pixels = np.stack([random_resized_crop(photos[i % len(photos)], height, width, rng)
                       for i in range(n)])
    return Dataset(f"natural-images:{split}", normalization.apply(pixels))


@functools.lru_cache(maxsize=1)
def photographs() -> tuple[Image.Image, ...]:
    """The decoded photographs of ``PHOTOGRAPHS``, in its order, as RGB images (grayscale ones
    replicated to 3 channels); decoded once per process."""
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
