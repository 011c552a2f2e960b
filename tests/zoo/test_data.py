"""load_data: dataset names, splits, paths, and the errors for everything else."""

import numpy as np
import pytest
import torch

from intq.errors import IntqError
from intq.zoo.data import DATASET_SHAPES, DATASETS, load_data
from intq.zoo.fashion_mnist import FASHION_MNIST_DIR
from intq.zoo.natural_images import load_natural_images

needs_fmnist = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed"
)


@needs_fmnist
def test_fashion_mnist_splits_map_to_train_and_test():
    evaluation = load_data("fashion-mnist", input_shape=(1, 28, 28), n=5)
    calibration = load_data("fashion-mnist", input_shape=(1, 28, 28), split="calibration", n=5)
    assert evaluation.name == "fashion-mnist:test" and len(evaluation) == 5
    assert calibration.name == "fashion-mnist:train" and len(calibration) == 5
    assert evaluation.y is not None and not torch.equal(evaluation.x, calibration.x)


def test_natural_images_follow_the_split():
    data = load_data("natural-images", input_shape=(3, 224, 224), split="calibration", n=3)
    assert torch.equal(data.x, load_natural_images("calibration", 3).x)


def test_paths_go_to_the_user_data_loader(tmp_path):
    x = np.ones((4, 1, 28, 28), np.float32)
    np.save(tmp_path / "x.npy", x)
    data = load_data(str(tmp_path / "x.npy"), input_shape=(1, 28, 28), n=2)
    assert data.x.shape == (2, 1, 28, 28) and data.y is None


def test_names_and_shapes_are_listed():
    assert DATASETS == ("fashion-mnist", "natural-images")
    assert DATASET_SHAPES == {"fashion-mnist": (1, 28, 28), "natural-images": (3, 224, 224)}


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        (
            "imagenet",
            {},
            r"unknown data 'imagenet': not a dataset \(fashion-mnist, natural-images\)",
        ),
        ("missing.npy", {}, "no such folder of images or .npy/.npz file"),
        ("fashion-mnist", {"input_shape": (3, 224, 224)}, r"provides \(1, 28, 28\) inputs"),
        ("natural-images", {"split": "train"}, "unknown data split 'train'"),
        ("natural-images", {"n": 0}, ">= 1"),
        ("natural-images", {"crops": 4}, "random crops apply to a folder of images"),
    ],
)
def test_bad_specs(spec, kwargs, message):
    kwargs = {"input_shape": (3, 224, 224), **kwargs}
    with pytest.raises(IntqError, match=message):
        load_data(spec, **kwargs)
