"""Behaviour every observer kind shares: errors, shapes, state_dict, reset, merge rules, no grad."""

import math

import pytest
import torch

from intq.observers import make_observer

from .refs import assert_same_state

KINDS = [
    ("minmax", {}),
    ("ema", {}),
    ("percentile", {}),
    ("mse", {"source": "histogram"}),
    ("mse", {"source": "tensor"}),
    ("kl", {}),
]
IDS = ["minmax", "ema", "percentile", "mse-histogram", "mse-tensor", "kl"]

parametrize_kinds = pytest.mark.parametrize(("kind", "options"), KINDS, ids=IDS)


def _data(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 4, 5, 5, generator=g) * torch.tensor([0.1, 1.0, 5.0, 0.0])[:, None, None]


@parametrize_kinds
def test_nan_and_inf_are_rejected_naming_the_observer_and_the_count(kind, options):
    obs = make_observer(kind, **options)
    x = torch.randn(100)
    x[[1, 3, 5]] = math.nan
    message = f"^{kind} observer: calibration tensor contains 3 NaN values; check the model inputs$"
    with pytest.raises(ValueError, match=message):
        obs.update(x)
    x[7] = -math.inf
    with pytest.raises(ValueError, match="contains 3 NaN and 1 Inf values"):
        obs.update(x)
    assert not obs.has_data


@parametrize_kinds
def test_a_rejected_batch_leaves_the_state_unchanged(kind, options):
    obs = make_observer(kind, per_channel=True, axis=1, **options)
    obs.update(_data())
    before = {k: v.clone() for k, v in obs.state_dict().items()}
    bad = _data(1)
    bad[0, 2, 0, 0] = math.inf
    with pytest.raises(ValueError, match="1 Inf values"):
        obs.update(bad)
    assert all(torch.equal(before[k], v) for k, v in obs.state_dict().items())


@parametrize_kinds
def test_bad_inputs_raise_value_errors(kind, options):
    obs = make_observer(kind, **options)
    with pytest.raises(
        ValueError, match=rf"^{kind} observer: got an empty tensor of shape \(0, 3\)"
    ):
        obs.update(torch.empty(0, 3))
    with pytest.raises(ValueError, match=f"^{kind} observer: expected a floating-point tensor"):
        obs.update(torch.arange(4))
    with pytest.raises(ValueError, match=f"^{kind} observer: expected a torch.Tensor"):
        obs.update([1.0, 2.0])
    with pytest.raises(
        ValueError, match=f"^{kind} observer: no data observed; run calibration first$"
    ):
        obs.ranges()


@parametrize_kinds
@pytest.mark.parametrize("axis", [4, -5])
def test_channel_axis_out_of_range_is_rejected(kind, options, axis):
    obs = make_observer(kind, per_channel=True, axis=axis, **options)
    with pytest.raises(ValueError, match=rf"channel axis {axis} is out of range .* \[-4, 3\]"):
        obs.update(_data())


@parametrize_kinds
def test_channel_count_must_stay_the_same(kind, options):
    obs = make_observer(kind, per_channel=True, axis=1, **options)
    obs.update(_data())
    with pytest.raises(ValueError, match="expected 4 channels along axis 1 .* got 5"):
        obs.update(torch.randn(2, 5))


@parametrize_kinds
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_ranges_are_float32_scalars_per_tensor_and_vectors_per_channel(kind, options, axis):
    x = _data()
    per_tensor = make_observer(kind, **options)
    per_tensor.update(x)
    per_channel = make_observer(kind, per_channel=True, axis=axis, **options)
    per_channel.update(x)
    for lo, hi, shape in (*per_tensor.ranges(), ()), (*per_channel.ranges(), (x.shape[axis],)):
        assert lo.shape == hi.shape == shape
        assert lo.dtype == hi.dtype == torch.float32
        assert torch.all(lo <= hi)
        assert torch.all(lo >= x.min()) and torch.all(hi <= x.max())


@parametrize_kinds
def test_ranges_are_copies(kind, options):
    obs = make_observer(kind, **options)
    obs.update(_data())
    lo, hi = obs.ranges()
    expected = (lo.clone(), hi.clone())
    lo.fill_(123.0)
    hi.fill_(-123.0)
    assert obs.ranges() == expected


@parametrize_kinds
def test_state_dict_round_trip_into_a_fresh_observer(kind, options):
    obs = make_observer(kind, per_channel=True, axis=1, **options)
    obs.update(_data(0))
    obs.update(_data(1) * 3)
    fresh = make_observer(kind, per_channel=True, axis=1, **options)
    fresh.load_state_dict(obs.state_dict())
    assert_same_state(fresh, obs)
    assert all(torch.equal(a, b) for a, b in zip(fresh.ranges(), obs.ranges(), strict=True))
    fresh.update(_data(2))
    obs.update(_data(2))
    assert_same_state(fresh, obs)


@parametrize_kinds
def test_reset_forgets_everything(kind, options):
    obs = make_observer(kind, per_channel=True, **options)
    fresh_state = make_observer(kind, per_channel=True, **options).state_dict()
    obs.update(_data(0) * 7)
    obs.reset()
    assert not obs.has_data
    assert obs.state_dict().keys() == fresh_state.keys()
    assert all(torch.equal(obs.state_dict()[k], v) for k, v in fresh_state.items())
    with pytest.raises(ValueError, match="no data observed"):
        obs.ranges()
    again = make_observer(kind, per_channel=True, **options)
    obs.update(_data(1))
    again.update(_data(1))
    assert_same_state(obs, again)


@parametrize_kinds
def test_update_detaches_and_accepts_half_precision(kind, options):
    x = _data().requires_grad_()
    obs = make_observer(kind, **options)
    obs.update(x * 2)
    assert not any(t.requires_grad for t in obs.ranges())
    half = make_observer(kind, **options)
    half.update(_data().half())
    reference = make_observer(kind, **options)
    reference.update(_data().half().float())
    assert_same_state(half, reference)


@parametrize_kinds
def test_merge_rules(kind, options):
    full = make_observer(kind, **options)
    full.update(_data())
    empty = make_observer(kind, **options)
    empty.merge(full)  # into an empty observer: a copy
    assert_same_state(empty, full)
    before = {k: v.clone() for k, v in full.state_dict().items()}
    full.merge(make_observer(kind, **options))  # an empty one: nothing changes
    assert all(torch.equal(before[k], v) for k, v in full.state_dict().items())
    with pytest.raises(
        ValueError, match=f"^{kind} observer: can only merge .* same kind and settings"
    ):
        full.merge(make_observer(kind, bits=4, **options))
    other_kind = "minmax" if kind != "minmax" else "ema"
    with pytest.raises(ValueError, match="can only merge"):
        full.merge(make_observer(other_kind))
    channels = make_observer(kind, per_channel=True, **options)
    channels.update(_data())
    wider = make_observer(kind, per_channel=True, **options)
    wider.update(torch.randn(5, 3))
    with pytest.raises(ValueError, match="cannot merge 5 channels into 8"):
        channels.merge(wider)


@parametrize_kinds
@pytest.mark.parametrize("sample_size", [None, 20])
def test_update_summary_of_what_update_extracts_gives_the_same_state(kind, options, sample_size):
    """A runtime that computes the extremes and every s-th value itself (``sample_stride``)
    and calls ``update_summary`` leaves the observer exactly as ``update`` on the tensors."""
    if options.get("source") == "histogram":  # the kind that samples; the others take all
        options = {**options, "sample_size": sample_size}
    direct, summarized = make_observer(kind, **options), make_observer(kind, **options)
    for seed in range(3):
        x = _data(seed).reshape(1, -1)
        direct.update(x)
        stride = summarized.sample_stride(x.shape[1])
        sample = None if stride == 0 else x[:, ::stride]
        summarized.update_summary(x.amin(dim=1), x.amax(dim=1), sample, stride)
    assert_same_state(direct, summarized)


@parametrize_kinds
def test_update_summary_refuses_non_finite_extremes_and_a_sample_without_a_stride(kind, options):
    obs = make_observer(kind, **options)
    with pytest.raises(ValueError, match=f"^{kind} observer: calibration tensor contains NaN or"):
        obs.update_summary(torch.tensor([math.nan]), torch.tensor([1.0]), torch.ones(1, 3), 1)
    with pytest.raises(ValueError, match="give a sample exactly when stride > 0"):
        obs.update_summary(torch.tensor([0.0]), torch.tensor([1.0]), torch.ones(1, 3), 0)
    assert not obs.has_data


@parametrize_kinds
def test_replace_leaves_the_state_of_reset_then_update(kind, options):
    replaced = make_observer(kind, per_channel=True, **options)
    expected = make_observer(kind, per_channel=True, **options)
    replaced.replace(_data(0) * 3)  # from empty, then over earlier data
    replaced.replace(_data(1))
    expected.update(_data(1))
    assert_same_state(replaced, expected)
    assert int(replaced.num_batches) == 1
