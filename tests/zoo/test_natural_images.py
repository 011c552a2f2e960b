"""Natural-image crops: bundled sources only, deterministic, disjoint splits, exact pixels."""

import hashlib
from importlib import resources

import pytest
import torch

from intq.errors import IntqError
from intq.zoo.natural_images import PHOTOGRAPHS, load_natural_images
from intq.zoo.normalization import IMAGENET, INCEPTION

_MEAN = torch.tensor(IMAGENET.mean, dtype=torch.float64).view(1, 3, 1, 1)
_STD = torch.tensor(IMAGENET.std, dtype=torch.float64).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def splits():
    return load_natural_images("calibration"), load_natural_images("evaluation")


def _pixels(data, n=64):
    """The first ``n`` samples back on the 0..255 scale, in float64."""
    return (data.x[:n].double() * _STD + _MEAN) * 255


def test_every_photograph_ships_inside_its_installed_package():
    folders = {"skimage": "data", "matplotlib": "mpl-data/sample_data"}
    for package, name in PHOTOGRAPHS:
        assert resources.files(package).joinpath(f"{folders[package]}/{name}").is_file(), name


def test_default_sizes_shapes_and_no_labels(splits):
    calibration, evaluation = splits
    assert calibration.x.shape == (256, 3, 224, 224) and calibration.y is None
    assert evaluation.x.shape == (512, 3, 224, 224) and evaluation.y is None
    assert calibration.name == "natural-images:calibration"
    assert evaluation.x.dtype == torch.float32 and evaluation.x.is_contiguous()


def test_same_call_twice_is_identical_and_n_is_a_prefix(splits):
    first, second = load_natural_images("evaluation", 24), load_natural_images("evaluation", 24)
    assert torch.equal(first.x, second.x)
    assert torch.equal(first.x, splits[1].x[:24])


@pytest.mark.parametrize(
    ("split", "digest"), [("calibration", "5d5ec66f91b42829"), ("evaluation", "2e17dbb7a036e5b4")]
)
def test_first_crops_match_the_recorded_pixels(split, digest):
    """Pins the crops across machines and releases (numpy Generator + pinned Pillow)."""
    pixels = _pixels(load_natural_images(split, 4)).round().to(torch.uint8)
    assert hashlib.sha256(pixels.numpy().tobytes()).hexdigest()[:16] == digest


def test_calibration_and_evaluation_share_no_crop(splits):
    calibration, evaluation = splits
    cal = {bytes(sample.numpy()) for sample in calibration.x}
    ev = {bytes(sample.numpy()) for sample in evaluation.x}
    assert len(cal) == 256 and len(ev) == 512
    assert not cal & ev


def test_values_are_normalized_whole_pixels(splits):
    pixels = _pixels(splits[0])
    assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3
    assert (pixels - pixels.round()).abs().max() < 1e-3
    per_sample_range = pixels.amax(dim=(1, 2, 3)) - pixels.amin(dim=(1, 2, 3))
    assert per_sample_range.min() > 20  # no blank crops


def test_grayscale_photographs_are_replicated_to_rgb(splits):
    pixels = _pixels(splits[0]).round()
    gray = (pixels[:, 0] == pixels[:, 1]).all(dim=(1, 2)) & (pixels[:, 1] == pixels[:, 2]).all(
        dim=(1, 2)
    )
    gray_sources = [i for i, (_, name) in enumerate(PHOTOGRAPHS) if name == "camera.png"]
    assert gray[gray_sources[0]]  # crop i comes from photograph i % len(PHOTOGRAPHS)
    assert not gray[0]  # astronaut is in colour


def test_bad_split_and_count():
    with pytest.raises(IntqError, match="unknown natural-images split 'train'"):
        load_natural_images("train")
    with pytest.raises(IntqError, match=">= 1"):
        load_natural_images("calibration", 0)


def test_inception_normalization_puts_pixels_on_the_1_over_128_grid(splits):
    inception = load_natural_images("calibration", 4, INCEPTION).x.double()
    pixels = _pixels(splits[0], 4).round()
    torch.testing.assert_close(inception * 128 + 127, pixels, rtol=0, atol=1e-4)
