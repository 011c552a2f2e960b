"""Recipes: the paper's presets, CLI-style options, per-layer overrides (later wins),
keep_float, and ValueErrors that say what was wrong and what is allowed."""

import dataclasses

import pytest
import torch

from intq.fakequant import Quantizer, QuantSpec, activation_spec, weight_spec
from intq.recipes import (
    DEFAULT_OBSERVER,
    DEFAULT_RECIPE,
    LayerOverride,
    Recipe,
    get_recipe,
    recipe_names,
)

# The paper's weight schemes (PAPER.md 1, TFLite int8 spec), written out independently.
SCHEME_FIELDS = {
    "asym-per-layer": dict(symmetric=False, narrow_range=False, per_channel=False),
    "sym-per-channel": dict(symmetric=True, narrow_range=True, per_channel=True),
    "asym-per-channel": dict(symmetric=False, narrow_range=False, per_channel=True),
}


def test_preset_names_are_every_scheme_at_8_and_4_bits():
    assert sorted(recipe_names()) == sorted(
        f"{scheme}-{bits}" for scheme in SCHEME_FIELDS for bits in (8, 4))
    assert DEFAULT_RECIPE in recipe_names()


@pytest.mark.parametrize("name", recipe_names())
def test_preset_weight_and_activation_specs(name):
    scheme, bits = name.rsplit("-", 1)
    recipe = get_recipe(name)
    w = recipe.weight
    assert (w.bits, w.signed, w.axis, w.observer) == (int(bits), True, 0, "minmax")
    assert {k: getattr(w, k) for k in SCHEME_FIELDS[scheme]} == SCHEME_FIELDS[scheme]
    a = recipe.activation
    assert (a.bits, a.signed, a.symmetric, a.per_channel) == (8, True, False, False)
    assert a.observer == DEFAULT_OBSERVER
    assert not recipe.weight_only and recipe.overrides == ()


def test_default_is_the_papers_recommendation():
    """Symmetric per-channel narrow int8 weights ([-127, 127]), asymmetric per-tensor int8
    activations ([-128, 127])."""
    recipe = get_recipe()
    assert (recipe.weight.qmin, recipe.weight.qmax, recipe.weight.per_channel) == (-127, 127, True)
    assert (recipe.activation.qmin, recipe.activation.qmax) == (-128, 127)


def test_options_change_bits_observer_and_granularity():
    recipe = get_recipe("sym-per-channel-8", w_bits=6, a_bits=7, observer="minmax")
    assert recipe.weight == weight_spec("sym-per-channel", 6)
    assert recipe.activation == activation_spec(7, observer="minmax")
    assert get_recipe("asym-per-layer-8", per_channel=True).weight.per_channel
    assert not get_recipe("asym-per-channel-4", per_channel=False).weight.per_channel
    assert get_recipe("sym-per-channel-8", per_channel=True).weight.symmetric


def test_weight_only_has_no_activation_spec():
    recipe = get_recipe("asym-per-layer-4", weight_only=True)
    assert recipe.weight_only and recipe.activation is None
    assert recipe.activation_for("anything") is None
    assert "weight-only" in recipe.name
    with_override = recipe.with_override("*", activation=activation_spec(4))
    assert with_override.activation_for("conv") is None  # weight-only stays weight-only


def test_override_by_pattern_replaces_only_what_it_names():
    base = get_recipe()
    w4, a16 = weight_spec("sym-per-channel", 4), activation_spec(16)
    recipe = base.with_override("layer1.*", weight=w4).with_override("fc", activation=a16)
    assert recipe.weight_for("layer1.0.conv1") == w4
    assert recipe.activation_for("layer1.0.conv1") == base.activation  # weight-only override
    assert recipe.weight_for("layer2.0.conv1") == base.weight
    assert recipe.weight_for("fc") == base.weight and recipe.activation_for("fc") == a16
    assert recipe.weight_for("layer1") == base.weight  # fnmatch: "layer1.*" needs the dot
    assert base.overrides == ()  # with_override returns a copy; recipes are frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.name = "other"


def test_later_override_wins():
    w4, w6 = weight_spec("sym-per-channel", 4), weight_spec("sym-per-channel", 6)
    recipe = get_recipe().with_override("blocks.*", weight=w4).with_override("blocks.2*",
                                                                              weight=w6)
    assert recipe.weight_for("blocks.1.conv") == w4
    assert recipe.weight_for("blocks.2.conv") == w6
    reversed_order = get_recipe().with_override("blocks.2*", weight=w6).with_override(
        "blocks.*", weight=w4)
    assert reversed_order.weight_for("blocks.2.conv") == w4


def test_keep_float():
    recipe = get_recipe().with_override("_conv_head", keep_float=True)
    assert recipe.keeps_float("_conv_head") and not recipe.keeps_float("_conv_stem")
    # a later override of the same layer without keep_float puts it back in integer
    back = recipe.with_override("_conv_*", weight=weight_spec("sym-per-channel", 4))
    assert not back.keeps_float("_conv_head")
    assert LayerOverride("a?c", keep_float=True).matches("abc")


@pytest.mark.parametrize("name", ["sym-per-channel", "per-channel-8", "SYM-PER-CHANNEL-8",
                                  "sym-per-layer-8", "int8", ""])
def test_unknown_name_lists_the_presets(name):
    with pytest.raises(ValueError, match=r"unknown recipe .*choose one of .*sym-per-channel-8"):
        get_recipe(name)


@pytest.mark.parametrize("kwargs", [{"name": "sym-per-channel-1"}, {"name": "asym-per-layer-17"},
                                    {"w_bits": 0}, {"w_bits": 32}, {"a_bits": 1},
                                    {"a_bits": 17}])
def test_invalid_bits_say_the_allowed_range(kwargs):
    with pytest.raises(ValueError, match=r"bits must be an integer in 2\.\.16"):
        get_recipe(**kwargs)


def test_invalid_observer_lists_the_observers():
    with pytest.raises(ValueError, match=r"observer must be one of .*minmax"):
        get_recipe(observer="median")


def test_granularity_switch_without_a_scheme_says_which():
    with pytest.raises(ValueError, match=r"no sym-per-layer scheme; choose one of"):
        get_recipe("sym-per-channel-8", per_channel=False)


def test_recipe_validation():
    w, a = weight_spec(), activation_spec()
    with pytest.raises(ValueError, match=r"weight must be a QuantSpec"):
        Recipe("r", "int8", a)
    with pytest.raises(ValueError, match=r"activation must be a QuantSpec or None"):
        Recipe("r", w, 8)
    per_channel = QuantSpec(per_channel=True, axis=1)
    with pytest.raises(ValueError, match=r"activations are quantized per tensor"):
        Recipe("r", w, per_channel)


def test_mse_weight_ranges_clip_the_weights_with_less_squared_error():
    recipe = get_recipe("sym-per-channel-4", weight_observer="mse")
    assert recipe.weight.observer == "mse" and recipe.name.startswith("sym-per-channel-4-mse")
    assert get_recipe("sym-per-channel-4").weight.observer == "minmax"
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 16, 3, 3, generator=g) * torch.logspace(-1, 1, 8).reshape(-1, 1, 1, 1)
    w[:, 0, 0, 0] *= 6  # one outlier per channel: min/max wastes levels on it
    errors = {}
    for kind in ("minmax", "mse"):
        q = Quantizer(get_recipe("sym-per-channel-4", weight_observer=kind).weight)
        errors[kind] = float((q(w) - w).pow(2).sum())
    assert errors["mse"] < 0.9 * errors["minmax"], errors
    with pytest.raises(ValueError, match=r"weight observer must be one of minmax, mse"):
        get_recipe(weight_observer="kl")
