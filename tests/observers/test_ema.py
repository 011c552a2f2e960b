"""EMAObserver: bias-corrected moving average of batch extremes against a float64 reference."""

import pytest
import torch

from intq.observers import EMAObserver, make_observer

from .refs import ref_ema


def _batches(count: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(16, 3, generator=g) * (1 + i % 5) + i * 0.1 for i in range(count)]


def test_first_batch_sets_the_range_exactly():
    x = torch.randn(100) * 3 + 1
    obs = make_observer("ema")
    obs.update(x)
    assert obs.ranges() == (x.min(), x.max())


@pytest.mark.parametrize("decay", [0.5, 0.9, 0.999])
def test_estimate_is_the_bias_corrected_weighted_sum(decay):
    batches = _batches(30)
    obs = EMAObserver(decay=decay)
    for x in batches:
        obs.update(x)
    lo, hi = obs.min_val, obs.max_val  # float64 state
    assert lo.item() == pytest.approx(ref_ema([x.min().item() for x in batches], decay), rel=1e-12)
    assert hi.item() == pytest.approx(ref_ema([x.max().item() for x in batches], decay), rel=1e-12)
    assert obs.ranges()[0].dtype == torch.float32


def test_early_batches_weigh_evenly_not_first_batch_dominated():
    """decay 0.999, batch maxima 1 then 3: a warm start alone would give ~1.002; we give ~2."""
    obs = EMAObserver(decay=0.999)
    obs.update(torch.tensor([0.0, 1.0]))
    obs.update(torch.tensor([0.0, 3.0]))
    assert obs.ranges()[1].item() == pytest.approx((0.999 * 1 + 3) / 1.999, rel=1e-6)


def test_per_channel_tracks_each_channel():
    batches = _batches(5, seed=3)
    obs = EMAObserver(per_channel=True, axis=1, decay=0.9)
    for x in batches:
        obs.update(x)
    for c in range(3):
        expected = ref_ema([x[:, c].max().item() for x in batches], 0.9)
        assert obs.max_val[c].item() == pytest.approx(expected, rel=1e-12)


def test_merge_is_the_count_weighted_average_and_keeps_the_larger_count():
    a, b = EMAObserver(decay=0.9), EMAObserver(decay=0.9)
    for x in _batches(6, seed=1):
        a.update(x)
    for x in _batches(2, seed=2):
        b.update(x)
    expected_lo = (6 * a.min_val + 2 * b.min_val) / 8
    expected_hi = (6 * a.max_val + 2 * b.max_val) / 8
    a.merge(b)
    assert torch.allclose(a.min_val, expected_lo, rtol=1e-15, atol=0)
    assert torch.allclose(a.max_val, expected_hi, rtol=1e-15, atol=0)
    assert int(a.num_batches) == 6


def test_merge_of_lockstep_ranks_is_their_plain_average():
    a, b = EMAObserver(), EMAObserver()
    for xa, xb in zip(_batches(4, seed=5), _batches(4, seed=6), strict=True):
        a.update(xa)
        b.update(xb)
    average = (a.max_val + b.max_val) / 2
    a.merge(b)
    assert torch.allclose(a.max_val, average, rtol=1e-15, atol=0)
    assert int(a.num_batches) == 4


@pytest.mark.parametrize("decay", [0, 1, 1.5, -0.1, "0.9", True])
def test_bad_decay_is_rejected(decay):
    with pytest.raises(ValueError, match="ema observer: decay must be a number in"):
        EMAObserver(decay=decay)
