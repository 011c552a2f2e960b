"""Power-of-two histogram: exact binning, minimal window, and merges identical to one pass."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from intq.observers import KLObserver, MSEObserver, PercentileObserver
from intq.observers.histogram import fit_exponent

from .refs import assert_same_state, ref_counts, ref_exponent

HISTOGRAM_KINDS = [
    (PercentileObserver, {}),
    (PercentileObserver, {"symmetric": True}),
    (MSEObserver, {}),
    (MSEObserver, {"symmetric": True}),
    (KLObserver, {}),
]


def _spread_data(seed: int) -> list[torch.Tensor]:
    """Chunks with very different ranges, so that later chunks force the bins to widen."""
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(3000, generator=g) * 0.01,
        torch.rand(2000, generator=g) * 5 + 1,
        torch.randn(500, generator=g) * 300 - 100,
        torch.tensor([-1e-45, 1e-45, 0.0, -0.0, 2.0**-30]),
    ]


@pytest.mark.parametrize("magnitude", [False, True])
def test_counts_equal_exact_binning_of_all_values_at_the_minimal_width(magnitude):
    chunks = _spread_data(0)
    obs = PercentileObserver(symmetric=magnitude, bins=1024)
    for x in chunks:
        obs.update(x)
    values = torch.cat(chunks).numpy()
    values = np.abs(values) if magnitude else values
    exponent = ref_exponent(float(values.min()), float(values.max()), 1024)
    offset, counts = ref_counts(values, exponent, 1024)
    assert int(obs.exponent) == exponent and int(obs.offset) == offset
    assert obs.counts[0].tolist() == counts.tolist()


def test_tiny_negative_values_land_below_zero():
    obs = PercentileObserver(bins=256)
    obs.update(torch.tensor([-1e-45, 100.0]))
    assert int(obs.offset) == -1 and obs.counts[0, 0] == 1


@given(
    lo=st.floats(-(2.0**100), 0, allow_subnormal=True, width=32),
    hi=st.floats(0, 2.0**100, allow_subnormal=True, width=32),
    bins=st.sampled_from([256, 1000, 2048]),
)
@settings(max_examples=200, deadline=None)
def test_fit_exponent_is_the_smallest_fitting_exponent(lo, hi, bins):
    e = fit_exponent(
        torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64), bins
    )
    assert int(e) == ref_exponent(lo, hi, bins)


@pytest.mark.parametrize(("cls", "options"), HISTOGRAM_KINDS)
def test_merge_of_halves_equals_one_observer_fed_everything(cls, options):
    chunks = _spread_data(1)
    whole = cls(**options)
    for x in chunks:
        whole.update(x)
    first, second = cls(**options), cls(**options)
    first.update(chunks[0])
    first.update(chunks[3])
    second.update(chunks[2])
    second.update(chunks[1])
    reverse = cls(**options)
    reverse.load_state_dict(second.state_dict())
    reverse.merge(first)
    first.merge(second)
    assert_same_state(first, whole)
    assert_same_state(reverse, whole)
    assert all(torch.equal(a, b) for a, b in zip(first.ranges(), whole.ranges(), strict=True))


@pytest.mark.parametrize(("cls", "options"), HISTOGRAM_KINDS)
def test_per_channel_merge_is_exact(cls, options):
    g = torch.Generator().manual_seed(2)
    first = torch.randn(64, 5, 7, generator=g) * torch.tensor([0.1, 1, 10, 100, 0])[:, None]
    second = torch.randn(64, 5, 7, generator=g) * torch.tensor([50, 1, 0.01, 100, 0])[:, None]
    whole, a, b = (cls(per_channel=True, axis=-2, **options) for _ in range(3))
    whole.update(first)
    whole.update(second)
    a.update(first)
    b.update(second)
    a.merge(b)
    assert_same_state(a, whole)


@given(
    data=st.lists(
        st.floats(-(2.0**20), 2.0**20, width=32, allow_subnormal=True), min_size=2, max_size=60
    ),
    cut=st.integers(1, 59),
)
@settings(max_examples=100, deadline=None)
def test_any_split_merges_to_the_same_state(data, cut):
    cut = min(cut, len(data) - 1)
    x = torch.tensor(data, dtype=torch.float32)
    whole, a, b = (
        PercentileObserver(bins=256),
        PercentileObserver(bins=256),
        PercentileObserver(bins=256),
    )
    whole.update(x)
    a.update(x[:cut])
    b.update(x[cut:])
    a.merge(b)
    assert_same_state(a, whole, ignore=("num_batches",))


def test_window_keeps_between_half_and_all_bins_occupied():
    obs = PercentileObserver(bins=2048)
    obs.update(torch.linspace(-3.0, 7.0, 10_000))
    occupied = torch.nonzero(obs.counts[0]).flatten()
    assert 1024 <= int(occupied[-1] - occupied[0]) + 1 <= 2048


def test_all_zero_data_uses_the_narrowest_bins():
    obs = PercentileObserver()
    obs.update(torch.zeros(10))
    assert int(obs.exponent) == -100 and obs.counts[0, 0] == 10
    assert obs.ranges() == (torch.tensor(0.0), torch.tensor(0.0))


@pytest.mark.parametrize(("n", "size", "stride"), [(100_000, 10_000, 11), (100_000, 9_999, 11),
                                                 (100_000, 50_000, 3)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_a_large_update_counts_every_strided_value_stride_times_within_the_full_range(
    n, size, stride, symmetric
):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n, generator=g) * 2
    x[stride * 3 + 1] = 50.0  # off the sample: the range must still come from every value
    obs = MSEObserver(bins=256, sample_size=size, symmetric=symmetric)
    obs.update(x)
    values = (x.abs() if symmetric else x).numpy()
    lo = 0.0 if symmetric else float(x.min())
    exponent = ref_exponent(lo, 50.0, 256)
    offset, counts = ref_counts(values[::stride], exponent, 256, lo=lo)
    assert float(obs.max_val) == 50.0 and float(obs.min_val) == float(x.min())
    assert int(obs.exponent) == exponent and int(obs.offset) == offset
    assert obs.counts[0].tolist() == (stride * counts).tolist()


def test_per_channel_sampling_counts_each_channel_like_its_own_observer():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 30_000, generator=g) * torch.tensor([[0.1], [1.0], [30.0]])
    together = MSEObserver(per_channel=True, bins=256, sample_size=1_000)
    together.update(x)
    for c in range(3):
        alone = MSEObserver(bins=256, sample_size=1_000)
        alone.update(x[c])
        assert together.counts[c].tolist() == alone.counts[0].tolist()


@pytest.mark.parametrize("size", [0, -5, 2.5, True])
def test_sample_size_must_be_a_positive_int(size):
    with pytest.raises(ValueError, match="mse observer: sample_size must be a positive int"):
        MSEObserver(sample_size=size)
