"""Recipes: which QuantSpec every weight and activation gets, as data (PAPER.md 1, 6).

A recipe names a weight scheme and bit width, an activation spec (None = weight-only) and
per-layer overrides by module-name pattern (``fnmatch``, e.g. ``"_blocks.0.*"``), and
whether cross-layer equalization runs before the quantizers are placed
(``intq.graph.equalize``; by default on for per-tensor weights with quantized activations):

    get_recipe("sym-per-channel-8")                # paper default: W8 sym/ch, A8 asym/layer
    get_recipe("asym-per-layer-4", weight_only=True)
    Recipe(...).with_override("_conv_head", keep_float=True)

Names are ``<scheme>-<weight bits>`` with scheme one of ``SCHEMES``; the activation bits
and observer are options (default 8 bits, ``DEFAULT_OBSERVER``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass

from intq.fakequant import QuantSpec, activation_spec, weight_spec
from intq.fakequant.presets import SCHEMES

__all__ = [
    "ACTIVATION_OBSERVER_OPTIONS",
    "DEFAULT_OBSERVER",
    "DEFAULT_RECIPE",
    "LayerOverride",
    "Recipe",
    "WEIGHT_OBSERVERS",
    "default_equalize",
    "get_recipe",
    "recipe_names",
]

DEFAULT_RECIPE = "sym-per-channel-8"
# Measured on EfficientNet-Lite0 (BENCHMARKS.md section 2): MSE-optimal clipping gives the best
# logit SQNR and agreement, in simulation and in ONNX Runtime.
DEFAULT_OBSERVER = "mse"
WEIGHT_OBSERVERS = ("minmax", "mse")
# 99.999 keeps the rare large activations of the linear bottlenecks that 99.99 clips.
ACTIVATION_OBSERVER_OPTIONS = {"percentile": {"percentile": 99.999}}
_NAME = re.compile(r"^(?P<scheme>[a-z-]+?)-(?P<bits>\d+)$")


@dataclass(frozen=True)
class LayerOverride:
    """Specs for the layers whose qualified name matches ``pattern`` (fnmatch).

    ``weight`` / ``activation`` replace the recipe's specs; ``keep_float`` keeps the
    layer in float (a float fallback region in the integer program).
    """

    pattern: str
    weight: QuantSpec | None = None
    activation: QuantSpec | None = None
    keep_float: bool = False

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatchcase(name, self.pattern)


@dataclass(frozen=True)
class Recipe:
    """Weight spec, activation spec (``None``: weight-only PTQ), per-layer overrides, and
    ``equalize``: cross-layer equalization of the float graph before placing quantizers."""

    name: str
    weight: QuantSpec
    activation: QuantSpec | None
    overrides: tuple[LayerOverride, ...] = ()
    equalize: bool = False

    def __post_init__(self) -> None:
        for spec, role in ((self.weight, "weight"), (self.activation, "activation")):
            if spec is not None and not isinstance(spec, QuantSpec):
                raise ValueError(f"recipe {self.name!r}: {role} must be a QuantSpec or None")
        if self.activation is not None and self.activation.per_channel:
            raise ValueError(
                f"recipe {self.name!r}: activations are quantized per tensor; "
                "use a per-layer activation spec"
            )

    @property
    def weight_only(self) -> bool:
        return self.activation is None

    def _override(self, layer: str) -> LayerOverride | None:
        """The last override matching ``layer`` (later overrides win)."""
        hits = [o for o in self.overrides if o.matches(layer)]
        return hits[-1] if hits else None

    def keeps_float(self, layer: str) -> bool:
        """True when ``layer`` stays in float."""
        override = self._override(layer)
        return override is not None and override.keep_float

    def weight_for(self, layer: str) -> QuantSpec:
        """The weight spec of ``layer`` (its override, else the recipe's)."""
        override = self._override(layer)
        return override.weight if override and override.weight else self.weight

    def activation_for(self, layer: str) -> QuantSpec | None:
        """The output activation spec of ``layer``; None in a weight-only recipe."""
        if self.activation is None:
            return None
        override = self._override(layer)
        return override.activation if override and override.activation else self.activation

    def with_override(self, pattern: str, **fields) -> Recipe:
        """A copy with one more override (``weight=``, ``activation=``, ``keep_float=``)."""
        override = LayerOverride(pattern, **fields)
        return dataclasses.replace(self, overrides=(*self.overrides, override))


def recipe_names() -> list[str]:
    """The preset names: every scheme at 8 and 4 weight bits."""
    return [f"{scheme}-{bits}" for bits in (8, 4) for scheme in SCHEMES]


def get_recipe(
    name: str = DEFAULT_RECIPE,
    *,
    w_bits: int | None = None,
    a_bits: int = 8,
    per_channel: bool | None = None,
    weight_only: bool = False,
    observer: str = DEFAULT_OBSERVER,
    weight_observer: str = "minmax",
    equalize: bool | None = None,
) -> Recipe:
    """The preset ``name`` (``<scheme>-<bits>``), adjusted by the CLI-style options.

    ``per_channel`` switches the scheme's granularity (sym-per-channel <-> sym-per-layer is
    not a preset: True/False picks the per-channel/per-layer form of the same symmetry).
    ``weight_observer``: one of ``WEIGHT_OBSERVERS`` (``mse``: the per-channel clipping that
    minimizes the weights' squared error, worth it at 4 bits). ``equalize`` None:
    ``default_equalize(recipe)``.
    """
    if weight_observer not in WEIGHT_OBSERVERS:
        raise ValueError(f"weight observer must be one of {', '.join(WEIGHT_OBSERVERS)}, "
                         f"got {weight_observer!r}")
    match = _NAME.match(name)
    if match is None or match["scheme"] not in SCHEMES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {', '.join(recipe_names())}")
    scheme = _with_granularity(match["scheme"], per_channel)
    bits = int(match["bits"]) if w_bits is None else w_bits
    weight = weight_spec(scheme, bits, observer=weight_observer)
    options = ACTIVATION_OBSERVER_OPTIONS.get(observer, {})
    activation = None if weight_only else activation_spec(a_bits, observer=observer, **options)
    weight_label = f"{scheme}-{bits}" + ("" if weight_observer == "minmax" else "-mse-weights")
    label = weight_label + ("-weight-only" if weight_only else f"-a{a_bits}-{observer}")
    recipe = Recipe(label, weight, activation)
    equalize = default_equalize(recipe) if equalize is None else equalize
    return dataclasses.replace(recipe, equalize=equalize)


def default_equalize(recipe: Recipe) -> bool:
    """Cross-layer equalization by default for per-tensor weights with quantized activations:
    one grid per tensor needs equal channel ranges; per-channel grids do not, and W4 per
    channel loses with it (BENCHMARKS.md 8). Weight-only recipes stay the paper's Table 2
    setting (no calibration, no correction, no equalization)."""
    return not recipe.weight.per_channel and not recipe.weight_only


def _with_granularity(scheme: str, per_channel: bool | None) -> str:
    if per_channel is None:
        return scheme
    symmetry = scheme.split("-per-")[0]
    wanted = f"{symmetry}-per-{'channel' if per_channel else 'layer'}"
    if wanted not in SCHEMES:
        raise ValueError(f"no {wanted} scheme; choose one of {', '.join(SCHEMES)}")
    return wanted
