"""load_fashion_mnist: shapes, normalization and labels on a tiny hand-made copy and on the
installed Debian dataset."""

import gzip
import struct

import numpy as np
import pytest
import torch

from intq.errors import IntqError
from intq.zoo.fashion_mnist import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    load_fashion_mnist,
)


def _write_idx(path, type_code, array):
    header = bytes([0, 0, type_code, array.ndim]) + b"".join(
        struct.pack(">I", d) for d in array.shape
    )
    path.write_bytes(gzip.compress(header + array.astype(">u1").tobytes()))


@pytest.fixture
def tiny_root(tmp_path):
    images = np.array([[[0, 255], [51, 102]], [[255, 255], [0, 0]], [[1, 2], [3, 4]]])
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x08, images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x08, np.array([9, 0, 4]))
    return tmp_path, images


def test_tiny_copy_is_normalized_pixel_by_pixel(tiny_root):
    root, images = tiny_root
    data = load_fashion_mnist("test", root=root)
    assert data.name == "fashion-mnist:test"
    assert data.x.dtype == torch.float32 and data.x.shape == (3, 1, 2, 2)
    assert data.y.dtype == torch.int64 and data.y.tolist() == [9, 0, 4]
    for idx in np.ndindex(images.shape):
        expected = (images[idx] / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD  # float64
        got = data.x[idx[0], 0, idx[1], idx[2]].item()
        assert abs(got - expected) <= 1e-6 * max(1.0, abs(expected))


def test_missing_files_unknown_split_and_inconsistent_shapes(tiny_root):
    root, _ = tiny_root
    with pytest.raises(IntqError, match="train-images-idx3-ubyte.gz is missing"):
        load_fashion_mnist("train", root=root)
    with pytest.raises(IntqError, match="unknown Fashion-MNIST split 'val'"):
        load_fashion_mnist("val", root=root)
    _write_idx(root / "t10k-labels-idx1-ubyte.gz", 0x08, np.array([1, 2]))
    with pytest.raises(IntqError, match="inconsistent shapes"):
        load_fashion_mnist("test", root=root)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_installed_test_split_has_10k_balanced_labels():
    data = load_fashion_mnist("test")
    assert data.x.shape == (10_000, 1, 28, 28) and data.x.dtype == torch.float32
    assert torch.bincount(data.y).tolist() == [1000] * 10
    lo, hi = -FASHION_MNIST_MEAN / FASHION_MNIST_STD, (1 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert data.x.min().item() == pytest.approx(lo, abs=1e-6)
    assert data.x.max().item() == pytest.approx(hi, abs=1e-6)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_installed_train_split_is_standardized():
    data = load_fashion_mnist("train")
    assert data.x.shape == (60_000, 1, 28, 28)
    assert torch.bincount(data.y).tolist() == [6000] * 10
    x = data.x.double()
    assert abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01
