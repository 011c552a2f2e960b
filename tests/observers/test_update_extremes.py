"""Observer.update_extremes / range_floats (QAT's per-step path in Python floats) against
update / ranges: the same state, batch after batch, for the kinds that take no sample."""

import math

import numpy as np
import pytest
import torch

from intq.observers import make_observer

from .refs import assert_same_state


def _batches(n: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, 4, 5, generator=g) * (1 + i) - i for i in range(n)]


@pytest.mark.parametrize("kind", ["minmax", "ema"])
@pytest.mark.parametrize("replace", [False, True])
def test_update_extremes_equals_update(kind, replace):
    by_tensor, by_floats = make_observer(kind), make_observer(kind)
    for x in _batches():
        if replace:
            by_tensor.replace(x)
        else:
            by_tensor.update(x)
        by_floats.update_extremes(x.min().item(), x.max().item(), replace=replace)
        assert_same_state(by_floats, by_tensor)
        lo, hi = by_tensor.ranges()
        assert by_floats.range_floats() == (lo.item(), hi.item())


def test_range_floats_are_float32_values():
    observer = make_observer("ema", decay=0.9)
    for x in _batches():
        observer.update(x)
    lo, hi = observer.range_floats()
    assert lo == float(np.float32(lo)) and hi == float(np.float32(hi))
    assert observer.min_val.dtype == torch.float64 and observer.min_val.item() != lo


def test_update_extremes_refuses_nonfinite_values_and_channels():
    observer = make_observer("ema")
    with pytest.raises(ValueError, match="^ema observer: calibration tensor contains NaN or Inf"):
        observer.update_extremes(math.nan, 1.0)
    assert not observer.has_data
    with pytest.raises(ValueError, match="update_extremes is per tensor"):
        make_observer("minmax", per_channel=True).update_extremes(0.0, 1.0)
    with pytest.raises(ValueError, match="range_floats is per tensor"):
        make_observer("minmax", per_channel=True).range_floats()
    with pytest.raises(ValueError, match="no data observed"):
        observer.range_floats()
