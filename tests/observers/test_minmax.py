"""MinMaxObserver: exact running extremes per tensor and per channel (any axis), exact merge."""

import pytest
import torch

from intq.observers import MinMaxObserver, make_observer

from .refs import assert_same_state


def _batches(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 6, 5, 3, generator=g) * scale for scale in (1.0, 3.0, 0.2)]


def test_per_tensor_ranges_are_the_extremes_of_all_batches():
    batches = _batches()
    obs = MinMaxObserver()
    for x in batches:
        obs.update(x)
    everything = torch.cat([x.flatten() for x in batches])
    lo, hi = obs.ranges()
    assert lo.shape == hi.shape == ()
    assert torch.equal(lo, everything.min()) and torch.equal(hi, everything.max())


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_per_channel_ranges_equal_amin_amax_over_the_other_axes(axis):
    batches = _batches(1)
    obs = make_observer("minmax", per_channel=True, axis=axis)
    for x in batches:
        obs.update(x)
    stacked = torch.stack(batches)  # batch dim first: channel axis shifts by one
    channel_axis = axis % 4 + 1
    others = [d for d in range(5) if d != channel_axis]
    lo, hi = obs.ranges()
    assert lo.shape == (batches[0].shape[axis],)
    assert torch.equal(lo, stacked.amin(dim=others))
    assert torch.equal(hi, stacked.amax(dim=others))


@pytest.mark.parametrize("per_channel", [False, True])
def test_merge_of_halves_equals_one_observer_fed_everything(per_channel):
    first, second = torch.randn(8, 3) * 0.5, torch.randn(8, 3) * 40 + 7
    whole = MinMaxObserver(per_channel=per_channel, axis=1)
    for x in (first, second):
        whole.update(x)
    a, b = (
        MinMaxObserver(per_channel=per_channel, axis=1),
        MinMaxObserver(per_channel=per_channel, axis=1),
    )
    a.update(first)
    b.update(second)
    a.merge(b)
    assert_same_state(a, whole)


def test_positive_only_data_is_not_relaxed_to_contain_zero():
    obs = MinMaxObserver()
    obs.update(torch.tensor([2.5, 3.5]))
    assert obs.ranges() == (torch.tensor(2.5), torch.tensor(3.5))
