"""QuantSpec: validation messages, normalization of observer options, hashing, grid properties."""

import dataclasses

import pytest

from intq.fakequant import OBSERVERS, QuantSpec


def test_defaults_grid_and_describe():
    spec = QuantSpec()
    assert (spec.qmin, spec.qmax) == (-128, 127)
    assert spec.describe() == "int8 asym per-tensor minmax half_even"
    weights = QuantSpec(bits=4, symmetric=True, narrow_range=True, per_channel=True, axis=1)
    assert (weights.qmin, weights.qmax) == (-7, 7)
    assert weights.describe() == "int4 sym narrow per-channel(axis=1) minmax half_even"
    assert (QuantSpec(signed=False).qmin, QuantSpec(signed=False).qmax) == (0, 255)
    assert QuantSpec(bits=16, signed=False, narrow_range=True).qmax == 65534


def test_observer_options_are_normalized_and_hashable():
    a = QuantSpec(observer="percentile", observer_options={"percentile": 99.9, "bins": 512})
    b = QuantSpec(observer="percentile", observer_options=[("bins", 512), ("percentile", 99.9)])
    assert a == b and hash(a) == hash(b)
    assert a.observer_options == (("bins", 512), ("percentile", 99.9))
    assert a.options == {"bins": 512, "percentile": 99.9}
    assert len({a, b, QuantSpec()}) == 2


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        QuantSpec().bits = 4
    assert dataclasses.replace(QuantSpec(), bits=4).qmax == 7


def test_observer_names_match_intq_observers():
    from intq.observers import OBSERVER_KINDS

    assert set(OBSERVERS) == set(OBSERVER_KINDS)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"bits": 1}, "bits must be an integer in 2..16, got 1"),
        ({"bits": 17}, "bits must be an integer in 2..16, got 17"),
        ({"bits": 8.0}, "bits must be an integer in 2..16, got 8.0"),
        ({"bits": True}, "bits must be an integer in 2..16, got True"),
        ({"symmetric": 1}, "symmetric must be True or False, got 1"),
        ({"narrow_range": "yes"}, "narrow_range must be True or False"),
        ({"signed": None}, "signed must be True or False"),
        ({"per_channel": 0}, "per_channel must be True or False"),
        ({"axis": 1.0}, "axis must be an int"),
        ({"axis": False}, "axis must be an int"),
        ({"observer": "max"}, "observer must be one of ('minmax', 'ema', 'percentile', 'mse', "
                              "'kl'), got 'max'"),
        ({"rounding": "nearest"}, "rounding must be one of ('half_even', 'half_away', "
                                  "'stochastic'), got 'nearest'"),
        ({"observer_options": 3}, "observer_options must be a mapping or (key, value) pairs"),
        ({"observer_options": [("a", 1, 2)]}, "observer_options must be a mapping or"),
        ({"observer_options": {1: 2}}, "observer_options keys must be str"),
        ({"observer_options": {"bins": [1, 2]}}, "must be hashable"),
        ({"observer_options": [("a", 1), ("a", 2)]}, "duplicate keys"),
    ],
)
def test_validation_messages(kwargs, message):
    with pytest.raises(ValueError) as info:
        QuantSpec(**kwargs)
    assert str(info.value).startswith("QuantSpec: ")
    assert message in str(info.value)
