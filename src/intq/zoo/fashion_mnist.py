"""Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (no download at run time)."""

from pathlib import Path

import numpy as np
import torch

from intq.errors import IntqError
from intq.zoo.dataset import Dataset
from intq.zoo.idx import read_idx

__all__ = ["FASHION_MNIST_DIR", "FASHION_MNIST_MEAN", "FASHION_MNIST_STD", "load_fashion_mnist"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_MEAN = 0.2860
FASHION_MNIST_STD = 0.3530
_FILES = {"train": "train", "test": "t10k"}


def load_fashion_mnist(split: str = "test", root: str | Path = FASHION_MNIST_DIR) -> Dataset:
    """Fashion-MNIST ``split`` ('train' 60k or 'test' 10k) as (N,1,28,28) float32,
    normalized ``(pixel/255 - mean) / std``, with int64 labels."""
    if split not in _FILES:
        raise IntqError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    root = Path(root)
    images_path = root / f"{_FILES[split]}-images-idx3-ubyte.gz"
    labels_path = root / f"{_FILES[split]}-labels-idx1-ubyte.gz"
    for path in (images_path, labels_path):
        if not path.is_file():
            raise IntqError(
                f"Fashion-MNIST file {path} is missing; install it with "
                "'apt-get install dataset-fashion-mnist' (./run setup does this)"
            )
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.shape != (len(images),):
        raise IntqError(f"Fashion-MNIST files in {root} have inconsistent shapes")
    x = (images.astype(np.float32) / 255.0 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    return Dataset(
        f"fashion-mnist:{split}",
        torch.from_numpy(x[:, None]),
        torch.from_numpy(labels.astype(np.int64)),
    )
