"""make_observer: kinds map to classes, options are checked and listed, bad values are rejected."""

import pytest

import intq.observers as observers
from intq.observers import (
    OBSERVER_KINDS,
    EMAObserver,
    KLObserver,
    MinMaxObserver,
    MSEObserver,
    PercentileObserver,
    TensorMSEObserver,
    make_observer,
)


def test_every_kind_builds_its_class_with_the_common_settings():
    expected = {
        "minmax": MinMaxObserver,
        "ema": EMAObserver,
        "percentile": PercentileObserver,
        "mse": MSEObserver,
        "kl": KLObserver,
    }
    assert set(OBSERVER_KINDS) == set(expected)
    for kind in OBSERVER_KINDS:
        obs = make_observer(kind, per_channel=False, axis=2, bits=4, symmetric=True)
        assert type(obs) is expected[kind]
        assert (obs.per_channel, obs.axis, obs.bits, obs.symmetric) == (False, 2, 4, True)


def test_mse_searches_the_tensor_per_channel_and_a_histogram_per_tensor_by_default():
    assert type(make_observer("mse", per_channel=True)) is TensorMSEObserver
    assert type(make_observer("mse")) is MSEObserver
    assert type(make_observer("mse", per_channel=True, source="histogram")) is MSEObserver
    assert type(make_observer("mse", source="tensor")) is TensorMSEObserver


def test_options_reach_the_observer():
    assert make_observer("ema", decay=0.9).decay == 0.9
    obs = make_observer("percentile", percentile=99.9, bins=512)
    assert (obs.percentile, obs.bins) == (99.9, 512)
    assert make_observer("kl", bins=4096).bins == 4096
    assert make_observer("mse", bins=1024).bins == 1024


def test_unknown_kind_lists_the_allowed_kinds():
    with pytest.raises(
        ValueError, match="unknown observer kind 'max'; allowed: minmax, ema, percentile, mse, kl"
    ):
        make_observer("max")


@pytest.mark.parametrize(
    ("kind", "options", "allowed"),
    [
        ("minmax", {"decay": 0.9}, "none"),
        ("ema", {"momentum": 0.9}, "decay"),
        ("percentile", {"bins": 512, "pct": 99}, "percentile, bins"),
        ("kl", {"percentile": 99}, "bins"),
        ("mse", {"decay": 0.9}, "source, bins, sample_size"),
        ("mse", {"source": "tensor", "bins": 512}, "source"),
    ],
)
def test_unknown_option_lists_the_allowed_options(kind, options, allowed):
    with pytest.raises(
        ValueError, match=rf"^{kind} observer .*unknown option.*; allowed: {allowed}$"
    ):
        make_observer(kind, **options)


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        ("mse", {"source": "data"}, "unknown source 'data'; allowed: histogram, tensor"),
        ("minmax", {"bits": 1}, r"bits must be an int in \[2, 16\]"),
        ("ema", {"bits": 8.0}, r"bits must be an int in \[2, 16\]"),
        ("kl", {"axis": "0"}, "axis must be an int"),
        ("percentile", {"bins": 100}, r"bins must be an int in \[256, 65536\]"),
        ("ema", {"decay": 1.0}, r"decay must be a number in \(0, 1\)"),
        ("percentile", {"percentile": 101}, r"percentile must be in \(50, 100\]"),
    ],
)
def test_bad_option_values_are_rejected(kind, settings, message):
    with pytest.raises(ValueError, match=message):
        make_observer(kind, **settings)


def test_public_names_are_exported():
    assert set(observers.__all__) >= {
        "OBSERVER_KINDS",
        "make_observer",
        "Observer",
        "MinMaxObserver",
        "EMAObserver",
        "PercentileObserver",
        "MSEObserver",
        "TensorMSEObserver",
        "KLObserver",
    }
