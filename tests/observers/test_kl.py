"""KLObserver: vectorized entropy calibration equals TensorRT's loop; clips tails, keeps uniform."""

import pytest
import torch

from intq.observers import KLObserver, make_observer
from intq.observers.kl import kl_threshold_bins

from .refs import ref_kl_threshold_bins


def _heavy_tailed(n: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.cat([torch.distributions.StudentT(3.0).sample((n,)), torch.tensor([80.0, -70.0])])


@pytest.mark.parametrize("seed", [0, 1])
def test_vectorized_search_equals_the_reference_loop(seed):
    obs = KLObserver(bits=6, bins=512)  # 32 levels: a few hundred candidates
    obs.update(_heavy_tailed(20_000, seed) if seed == 0 else torch.randn(20_000))
    counts = obs.counts[0]
    occupied = int(torch.nonzero(counts).max()) + 1
    expected = ref_kl_threshold_bins(counts[:occupied].numpy(), 32)
    assert int(kl_threshold_bins(counts, 32)) == expected


def test_symmetric_threshold_clips_heavy_tails():
    x = _heavy_tailed(200_000, seed=2)
    obs = make_observer("kl", symmetric=True)
    obs.update(x)
    lo, hi = obs.ranges()
    assert lo.item() == -hi.item()
    assert 0 < hi.item() < 0.5 * x.abs().max().item()


@pytest.mark.parametrize("symmetric", [False, True])
def test_threshold_on_uniform_data_is_within_one_bin_of_the_max(symmetric):
    torch.manual_seed(3)
    x = torch.rand(2_000_000) * 2 - 1
    obs = KLObserver(symmetric=symmetric)
    obs.update(x)
    _, hi = obs.ranges()
    top = x.abs().max().item()
    assert top - obs.bin_width().item() <= hi.item() <= top


def test_affine_range_is_the_observed_range_clipped_at_the_threshold():
    torch.manual_seed(4)
    x = torch.distributions.StudentT(3.0).sample((100_000,)).abs() + 0.5  # all positive
    obs = KLObserver()
    obs.update(x)
    lo, hi = obs.ranges()
    assert lo.item() == x.min().item()
    assert hi.item() < x.max().item()


def test_per_channel_equals_one_observer_per_channel():
    torch.manual_seed(5)
    x = _heavy_tailed(30_000, seed=5).reshape(2, -1) * torch.tensor([[1.0], [25.0]])
    obs = KLObserver(per_channel=True, symmetric=True)
    obs.update(x)
    lo, hi = obs.ranges()
    for c in range(2):
        single = KLObserver(symmetric=True)
        single.update(x[c])
        assert torch.equal(hi[c], single.ranges()[1])


def test_fewer_occupied_bins_than_levels_keeps_the_max():
    obs = KLObserver(bits=12, bins=1024)  # 2048 levels
    obs.update(torch.tensor([-3.0, 0.5, 2.0]))
    assert obs.ranges() == (torch.tensor(-3.0), torch.tensor(2.0))


def test_kl_is_not_dragged_down_by_the_zero_spike_of_a_relu():
    """90% exact zeros (a ReLU that is mostly off) + uniform values up to 5: the zeros are exact
    on any grid, so the threshold must stay at the top of the uniform part (the TensorRT search
    with the spike included picked about 1.0, clipping 80% of the range)."""
    x = torch.cat(
        [torch.zeros(90_000), torch.rand(10_000, generator=torch.Generator().manual_seed(0)) * 5]
    )
    observer = make_observer("kl")
    observer.update(x)
    low, high = observer.ranges()
    assert float(low) == 0.0
    assert float(high) > 0.95 * float(x.max())


def test_kl_on_one_sided_affine_data_uses_all_levels():
    """Half-normal data (a ReLU6 of N(0, 1)) on an affine uint grid: 256 levels over [0, t], so
    the threshold lands in the far tail, not near 1.5 as with 128 levels and the zero spike."""
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0)).clamp(0, 6)
    observer = make_observer("kl")
    observer.update(x)
    _, high = observer.ranges()
    assert 3.0 < float(high) <= float(x.max())
