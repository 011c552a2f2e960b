"""User data: image folders (labelled, flat, mixed sizes and modes) and .npy/.npz files,
with every kind of bad input refused by a one-line IntqError."""

import numpy as np
import pytest
import torch
from PIL import Image

from intq.errors import IntqError
from intq.zoo.fashion_mnist import FASHION_MNIST_MEAN, FASHION_MNIST_STD
from intq.zoo.normalization import IMAGENET
from intq.zoo.user_data import load_user_data


def _save(path, array, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8), mode).save(path)


def _solid(height, width, rgb):
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (height, width, 3))


def _imagenet(rgb):
    """float64 reference of one normalized RGB pixel."""
    return [(v / 255 - m) / s for v, m, s in zip(rgb, IMAGENET.mean, IMAGENET.std, strict=True)]


def test_class_subfolders_give_sorted_labels_interleaved(tmp_path):
    colours = {"cat": (10, 20, 30), "dog": (200, 100, 0), "ant": (0, 0, 255)}
    counts = {"cat": 2, "dog": 3, "ant": 1}
    for name, count in counts.items():
        for i in range(count):
            _save(tmp_path / name / f"{i}.png", _solid(6, 9, colours[name]))
    (tmp_path / "dog" / "notes.txt").write_text("not an image")
    data = load_user_data(tmp_path, input_shape=(3, 4, 4))
    # classes ant=0, cat=1, dog=2; round-robin over classes, files in name order
    assert data.y.tolist() == [0, 1, 2, 1, 2, 2]
    assert data.x.shape == (6, 3, 4, 4) and data.x.dtype == torch.float32
    for sample, label in zip(data.x, data.y.tolist(), strict=True):
        rgb = colours[["ant", "cat", "dog"][label]]
        expected = torch.tensor(_imagenet(rgb), dtype=torch.float64).view(3, 1, 1)
        torch.testing.assert_close(sample.double(), expected.expand(3, 4, 4), atol=1e-6, rtol=0)
    head = load_user_data(tmp_path, input_shape=(3, 4, 4), n=4)
    assert torch.equal(head.x, data.x[:4]) and torch.equal(head.y, data.y[:4])


def test_integer_class_names_sort_numerically(tmp_path):
    for name in ("10", "2", "1"):
        _save(tmp_path / name / "a.png", np.full((5, 5), int(name), dtype=np.uint8))
    data = load_user_data(tmp_path, input_shape=(1, 5, 5))
    pixels = data.x[:, 0, 0, 0].double() * FASHION_MNIST_STD + FASHION_MNIST_MEAN
    assert data.y.tolist() == [0, 1, 2]
    assert (pixels * 255).round().tolist() == [1, 2, 10]


def test_flat_folder_has_no_labels_and_mixes_sizes_and_modes(tmp_path):
    rng = np.random.default_rng(0)
    _save(tmp_path / "a_gray.png", rng.integers(0, 256, (30, 50)))
    _save(tmp_path / "b_rgb.jpg", _solid(64, 32, (200, 100, 50)))
    _save(tmp_path / "c_rgba.png", rng.integers(0, 256, (7, 7, 4)), "RGBA")
    data = load_user_data(tmp_path, input_shape=(3, 16, 16))
    assert data.y is None and data.x.shape == (3, 3, 16, 16)
    gray = data.x[0].double() * torch.tensor(IMAGENET.std).view(3, 1, 1)
    gray = gray + torch.tensor(IMAGENET.mean).view(3, 1, 1)
    torch.testing.assert_close(gray[0], gray[1], atol=1e-6, rtol=0)  # replicated channels
    torch.testing.assert_close(gray[1], gray[2], atol=1e-6, rtol=0)


def test_rgb_image_for_a_one_channel_model_uses_luma_and_fashion_mnist_stats(tmp_path):
    _save(tmp_path / "x.png", _solid(28, 28, (200, 100, 50)))
    data = load_user_data(tmp_path, input_shape=(1, 28, 28))
    luma = (200 * 299 + 100 * 587 + 50 * 114) // 1000  # ITU-R 601-2, as PIL's "L"
    expected = (luma / 255 - FASHION_MNIST_MEAN) / FASHION_MNIST_STD
    assert data.x.shape == (1, 1, 28, 28)
    assert (data.x.double() - expected).abs().max() < 1e-6


@pytest.mark.parametrize(("height", "width"), [(32, 64), (64, 32), (40, 40)])
def test_resize_shorter_side_then_center_crop_matches_two_step_reference(tmp_path, height, width):
    image = np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    _save(tmp_path / "x.png", image)
    data = load_user_data(tmp_path, input_shape=(3, 8, 8))
    scale = 8 / min(height, width)
    resized = Image.fromarray(image).resize(
        (round(width * scale), round(height * scale)), Image.Resampling.BILINEAR
    )
    left, top = (resized.width - 8) // 2, (resized.height - 8) // 2
    reference = np.asarray(resized.crop((left, top, left + 8, top + 8)), dtype=np.float64)
    got = data.x[0].double() * torch.tensor(IMAGENET.std).view(3, 1, 1)
    got = (got + torch.tensor(IMAGENET.mean).view(3, 1, 1)) * 255
    # Same geometry; PIL rounds its first resampling pass to 8 bits, so 1 level may differ.
    diff = np.abs(got.permute(1, 2, 0).numpy() - reference)
    assert diff.max() < 1 + 1e-3 and diff.mean() < 0.25


def test_folder_errors(tmp_path):
    with pytest.raises(IntqError, match="no images found"):
        load_user_data(tmp_path, input_shape=(3, 8, 8))
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(IntqError, match="no images found"):
        load_user_data(tmp_path, input_shape=(3, 8, 8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(IntqError, match=r"cannot read image .*broken\.png"):
        load_user_data(tmp_path, input_shape=(3, 8, 8))
    _save(tmp_path / "cls" / "a.png", _solid(4, 4, (1, 2, 3)))
    with pytest.raises(IntqError, match="both at the top and in class sub-folders"):
        load_user_data(tmp_path, input_shape=(3, 8, 8))
    (tmp_path / "broken.png").unlink()
    with pytest.raises(IntqError, match="1 or 3 input channels, not 2"):
        load_user_data(tmp_path, input_shape=(2, 8, 8))
    with pytest.raises(IntqError, match=">= 1"):
        load_user_data(tmp_path, input_shape=(3, 8, 8), n=0)


def test_npy_and_npz_round_trip(tmp_path):
    x = np.random.default_rng(2).standard_normal((5, 1, 4, 4)).astype(np.float32)
    y = np.array([3, 0, 1, 1, 9], dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "x.npz", x=x)
    data = load_user_data(tmp_path / "x.npy", input_shape=(1, 4, 4))
    assert data.y is None and np.array_equal(data.x.numpy(), x)
    data = load_user_data(tmp_path / "xy.npz", input_shape=(1, 4, 4), n=3)
    assert np.array_equal(data.x.numpy(), x[:3])
    assert data.y.dtype == torch.int64 and data.y.tolist() == [3, 0, 1]
    data = load_user_data(tmp_path / "x.npz", input_shape=(1, 4, 4))
    assert data.y is None and np.array_equal(data.x.numpy(), x)


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (
            np.zeros((2, 1, 4, 4), np.float64),
            r"expected inputs float32 of shape \(N, 1, 4, 4\), "
            r"got float64 of shape \(2, 1, 4, 4\)",
        ),
        (np.zeros((2, 4, 4), np.float32), r"got float32 of shape \(2, 4, 4\)"),
        (np.zeros((2, 3, 4, 4), np.float32), r"got float32 of shape \(2, 3, 4, 4\)"),
        (np.zeros((0, 1, 4, 4), np.float32), "holds no samples"),
        (
            np.array([[[[0.0]]], [[[np.nan]]], [[[np.inf]]]], np.float32).repeat(4, 2).repeat(4, 3),
            r"2 samples hold NaN or Inf values \(first: sample 1\)",
        ),
    ],
)
def test_bad_npy_inputs(tmp_path, x, message):
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(IntqError, match=message):
        load_user_data(tmp_path / "x.npy", input_shape=(1, 4, 4))


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"inputs": np.zeros((2, 1, 4, 4), np.float32)}, "needs an array 'x'.*it has 'inputs'"),
        (
            {"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.array([0.0, 1.0])},
            r"labels 'y' as integers of shape \(2,\), got float64",
        ),
        (
            {"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.array([0, 1, 2])},
            r"got int64 of shape \(3,\)",
        ),
        ({"x": np.zeros((2, 1, 4, 4), np.float32), "y": np.array([0, -1])}, "must be >= 0"),
    ],
)
def test_bad_npz_files(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(IntqError, match=message):
        load_user_data(tmp_path / "d.npz", input_shape=(1, 4, 4))


class _Touch:
    """Unpickling this object creates a file: proof that a loader unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickled_object_arrays_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    objects = np.empty(1, dtype=object)
    objects[0] = _Touch(marker)
    np.save(tmp_path / "o.npy", objects, allow_pickle=True)
    np.savez(tmp_path / "o.npz", x=objects)
    for name in ("o.npy", "o.npz"):
        with pytest.raises(IntqError, match="never unpickles"):
            load_user_data(tmp_path / name, input_shape=(1, 4, 4))
    assert not marker.exists()


def test_corrupt_unsupported_and_missing_files(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "bad.npz").write_bytes(b"PK not a zip")
    (tmp_path / "data.csv").write_text("1,2,3")
    for name in ("bad.npy", "bad.npz"):
        with pytest.raises(IntqError, match=f"cannot read .*{name}"):
            load_user_data(tmp_path / name, input_shape=(1, 4, 4))
    with pytest.raises(IntqError, match="unsupported data file"):
        load_user_data(tmp_path / "data.csv", input_shape=(1, 4, 4))
    with pytest.raises(IntqError, match="no such file or folder"):
        load_user_data(tmp_path / "nope.npy", input_shape=(1, 4, 4))


def test_random_crops_cycle_over_the_images_with_their_labels(tmp_path):
    colours = {"cat": (10, 20, 30), "dog": (200, 100, 0)}
    for name, rgb in colours.items():
        for i in range(2):
            _save(tmp_path / name / f"{i}.png", _solid(40, 60, rgb))
    data = load_user_data(tmp_path, input_shape=(3, 8, 8), crops=10)
    # files interleaved: cat/0, dog/0, cat/1, dog/1; crop i is of file i % 4
    assert data.y.tolist() == [0, 1, 0, 1, 0, 1, 0, 1, 0, 1]
    assert data.x.shape == (10, 3, 8, 8) and "10 random crops" in data.name
    for sample, label in zip(data.x, data.y.tolist(), strict=True):
        rgb = colours[["cat", "dog"][label]]
        expected = torch.tensor(_imagenet(rgb), dtype=torch.float64).view(3, 1, 1)
        torch.testing.assert_close(sample.double(), expected.expand(3, 8, 8), atol=1e-6, rtol=0)
    first_images = load_user_data(tmp_path, input_shape=(3, 8, 8), n=2, crops=4)
    assert first_images.y.tolist() == [0, 1, 0, 1]


def test_random_crops_are_seeded_prefix_stable_and_vary(tmp_path):
    rng = np.random.default_rng(0)
    _save(tmp_path / "noise.png", rng.integers(0, 256, (50, 70, 3)))
    data = load_user_data(tmp_path, input_shape=(3, 16, 16), crops=6)
    again = load_user_data(tmp_path, input_shape=(3, 16, 16), crops=8)
    other_seed = load_user_data(tmp_path, input_shape=(3, 16, 16), crops=6, seed=1)
    assert torch.equal(data.x, again.x[:6])  # crop i depends on (seed, i) only
    assert not torch.equal(data.x, other_seed.x)
    assert len({sample.numpy().tobytes() for sample in data.x}) == 6


def test_random_crops_need_a_folder(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 3, 4, 4), dtype=np.float32))
    with pytest.raises(IntqError, match="random crops need a folder of images"):
        load_user_data(tmp_path / "x.npy", input_shape=(3, 4, 4), crops=3)
    with pytest.raises(IntqError, match="number of crops must be >= 1"):
        load_user_data(tmp_path, input_shape=(3, 4, 4), crops=0)
