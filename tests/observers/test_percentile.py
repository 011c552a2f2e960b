"""PercentileObserver: streaming percentiles within one bin width of numpy.percentile."""

import numpy as np
import pytest
import torch

from intq.observers import PercentileObserver, make_observer


def _data(n: int = 1_000_000, seed: int = 0) -> torch.Tensor:
    """Skewed data: a Gaussian plus a shifted, wider Gaussian."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.randn(n // 2, generator=g), torch.randn(n // 2, generator=g) * 2 + 1])


def _feed(obs: PercentileObserver, x: torch.Tensor) -> None:
    for chunk in x.chunk(4):
        obs.update(chunk)


@pytest.mark.parametrize("percentile", [90.0, 99.0, 99.9, 99.99, 100.0])
def test_affine_range_is_within_one_bin_of_numpy(percentile):
    x = _data()
    obs = PercentileObserver(percentile=percentile)
    _feed(obs, x)
    lo, hi = obs.ranges()
    ref_lo, ref_hi = np.percentile(x.double().numpy(), [100 - percentile, percentile])
    width = float(obs.bin_width())
    assert abs(lo.item() - ref_lo) <= width and abs(hi.item() - ref_hi) <= width


@pytest.mark.parametrize("percentile", [75.0, 90.0, 99.0])
def test_values_are_placed_inside_their_bin_where_the_data_is_dense(percentile):
    x = _data(seed=3)
    obs = PercentileObserver(percentile=percentile)
    obs.update(x)
    lo, hi = obs.ranges()
    ref_lo, ref_hi = np.percentile(x.double().numpy(), [100 - percentile, percentile])
    width = float(obs.bin_width())
    assert abs(lo.item() - ref_lo) <= 0.1 * width and abs(hi.item() - ref_hi) <= 0.1 * width


@pytest.mark.parametrize("percentile", [99.0, 99.99])
def test_symmetric_range_is_the_percentile_of_magnitudes(percentile):
    x = _data(seed=1)
    obs = make_observer("percentile", symmetric=True, percentile=percentile)
    _feed(obs, x)
    lo, hi = obs.ranges()
    ref = np.percentile(x.abs().double().numpy(), percentile)
    assert lo.item() == -hi.item()
    assert abs(hi.item() - ref) <= float(obs.bin_width())


def test_per_channel_percentiles_match_numpy_per_channel():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(50_000, 3, generator=g) * torch.tensor([0.01, 1.0, 30.0]) + torch.tensor(
        [0.0, 5.0, -7.0]
    )
    obs = PercentileObserver(per_channel=True, axis=1, percentile=99.0)
    _feed(obs, x)
    lo, hi = obs.ranges()
    ref = np.percentile(x.double().numpy(), [1.0, 99.0], axis=0)
    width = obs.bin_width().numpy()
    assert np.all(np.abs(lo.numpy() - ref[0]) <= width)
    assert np.all(np.abs(hi.numpy() - ref[1]) <= width)


def test_range_never_leaves_the_observed_extremes():
    x = torch.tensor([1.0, 1.5, 2.0, 3.0])
    obs = PercentileObserver(percentile=100.0)
    obs.update(x)
    lo, hi = obs.ranges()
    assert 1.0 <= lo.item() and hi.item() <= 3.0


@pytest.mark.parametrize("percentile", [50, 0, 100.5, "99", None])
def test_bad_percentile_is_rejected(percentile):
    with pytest.raises(ValueError, match="percentile observer: percentile must be"):
        PercentileObserver(percentile=percentile)
