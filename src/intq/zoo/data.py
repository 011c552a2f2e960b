"""One entry point for data: a zoo dataset name, a folder of images, or a .npy/.npz file."""

from pathlib import Path

from intq.errors import IntqError
from intq.zoo.dataset import Dataset
from intq.zoo.fashion_mnist import load_fashion_mnist
from intq.zoo.natural_images import NATURAL_IMAGES_SHAPE, load_natural_images
from intq.zoo.normalization import IMAGENET, Normalization
from intq.zoo.user_data import load_user_data

__all__ = ["DATASETS", "DATASET_SHAPES", "SPLITS", "load_data"]

DATASETS = ("fashion-mnist", "natural-images")
DATASET_SHAPES = {"fashion-mnist": (1, 28, 28), "natural-images": NATURAL_IMAGES_SHAPE}
SPLITS = ("calibration", "evaluation")
_FASHION_MNIST_SPLITS = {"calibration": "train", "evaluation": "test"}


def load_data(
    spec: str,
    *,
    input_shape: tuple[int, int, int],
    split: str = "evaluation",
    n: int | None = None,
    normalization: Normalization | None = None,
    crops: int | None = None,
) -> Dataset:
    """The data named by ``spec`` for a model taking ``input_shape`` (C, H, W) inputs.

    ``spec`` is a name of ``DATASETS`` ('fashion-mnist': 'calibration' reads the train set,
    'evaluation' the test set; 'natural-images': disjoint crops per split), a folder of
    images, or a ``.npy``/``.npz`` file (``split`` does not apply to the user's own data).
    ``n``: at most that many samples (each loader's own default when ``None``).
    ``normalization``: how the model wants pixels normalized (natural-images and image
    folders; default ImageNet for 3 channels, Fashion-MNIST's for 1). Fashion-MNIST keeps its
    own statistics and array files are taken as already preprocessed. ``crops``: a folder
    gives that many random-resized crops of its (first ``n``) images instead of one center
    crop each (``intq.zoo.user_data``); only for folders.
    """
    if split not in SPLITS:
        raise IntqError(f"unknown data split {split!r}; use one of {', '.join(SPLITS)}")
    if n is not None and n < 1:
        raise IntqError(f"the number of samples must be >= 1, got {n}")
    input_shape = tuple(input_shape)
    if spec in DATASETS:
        if crops is not None:
            raise IntqError(f"random crops apply to a folder of images, not to {spec}")
        _check_shape(spec, input_shape)
        if spec == "fashion-mnist":
            data = load_fashion_mnist(_FASHION_MNIST_SPLITS[split])
            return data if n is None else data.head(n)
        return load_natural_images(split, n, normalization or IMAGENET)
    if Path(spec).exists():
        return load_user_data(spec, input_shape=input_shape, n=n, normalization=normalization,
                              crops=crops)
    raise IntqError(
        f"unknown data {spec!r}: not a dataset ({', '.join(DATASETS)}) "
        "and no such folder of images or .npy/.npz file"
    )


def _check_shape(name: str, input_shape: tuple[int, ...]) -> None:
    if input_shape != DATASET_SHAPES[name]:
        raise IntqError(
            f"dataset {name!r} provides {DATASET_SHAPES[name]} inputs but the model expects "
            f"{input_shape}; pass matching data (a folder of images or a .npy file)"
        )
