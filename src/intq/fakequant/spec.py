"""QuantSpec: the frozen, hashable description of one quantizer (grid, granularity, observer).

    QuantSpec(bits=8, symmetric=True, narrow_range=True, per_channel=True)   # TFLite weights
    QuantSpec(observer="ema", observer_options={"decay": 0.999})            # QAT activations

`observer_options` may be given as a mapping or as (key, value) pairs; it is stored as a tuple of
pairs sorted by key, so equal specs compare and hash equal.
"""

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from intq.qmath import MAX_BITS, MIN_BITS, ROUNDINGS, qrange

__all__ = ["OBSERVERS", "QuantSpec"]

OBSERVERS = ("minmax", "ema", "percentile", "mse", "kl")


@dataclass(frozen=True)
class QuantSpec:
    """How to quantize one tensor; validated on construction (ValueError says what is allowed).

    bits: 2..16. symmetric: zero point at the grid midpoint (else affine with a nudged zero
    point). narrow_range: drop one grid level (see intq.qmath.qrange). signed: int grid (else
    uint). per_channel: one scale per slice along `axis` (negative allowed). observer: range
    estimator kind, configured by observer_options. rounding: half_even, half_away or stochastic.
    """

    bits: int = 8
    symmetric: bool = False
    narrow_range: bool = False
    signed: bool = True
    per_channel: bool = False
    axis: int = 0
    observer: str = "minmax"
    observer_options: tuple[tuple[str, Hashable], ...] = ()
    rounding: str = "half_even"

    def __post_init__(self) -> None:
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not (
                MIN_BITS <= self.bits <= MAX_BITS):
            raise ValueError(f"QuantSpec: bits must be an integer in {MIN_BITS}..{MAX_BITS}, "
                             f"got {self.bits!r}")
        for name in ("symmetric", "narrow_range", "signed", "per_channel"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"QuantSpec: {name} must be True or False, "
                                 f"got {getattr(self, name)!r}")
        if isinstance(self.axis, bool) or not isinstance(self.axis, int):
            raise ValueError(f"QuantSpec: axis must be an int (the channel axis), "
                             f"got {self.axis!r}")
        if self.observer not in OBSERVERS:
            raise ValueError(f"QuantSpec: observer must be one of {OBSERVERS}, "
                             f"got {self.observer!r}")
        if self.rounding not in ROUNDINGS:
            raise ValueError(f"QuantSpec: rounding must be one of {ROUNDINGS}, "
                             f"got {self.rounding!r}")
        object.__setattr__(self, "observer_options", _normalize_options(self.observer_options))

    @property
    def qmin(self) -> int:
        """Lowest integer of the grid (intq.qmath.qrange)."""
        return qrange(self.bits, self.signed, self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        """Highest integer of the grid (intq.qmath.qrange)."""
        return qrange(self.bits, self.signed, self.narrow_range)[1]

    @property
    def options(self) -> dict[str, Any]:
        """observer_options as a dict (keyword arguments of the observer)."""
        return dict(self.observer_options)

    def describe(self) -> str:
        """One line, e.g. 'int8 sym narrow per-channel(axis=0) minmax half_even'."""
        grid = f"{'int' if self.signed else 'uint'}{self.bits}"
        kind = "sym" if self.symmetric else "asym"
        narrow = " narrow" if self.narrow_range else ""
        granularity = f"per-channel(axis={self.axis})" if self.per_channel else "per-tensor"
        options = "".join(f" {key}={value!r}" for key, value in self.observer_options)
        return f"{grid} {kind}{narrow} {granularity} {self.observer}{options} {self.rounding}"


def _normalize_options(options: Mapping | Iterable) -> tuple[tuple[str, Hashable], ...]:
    """Sorted (key, value) pairs with str keys and hashable values."""
    try:
        pairs = list(options.items() if isinstance(options, Mapping) else options)
        keys = [key for key, _ in pairs]
    except (TypeError, ValueError):
        raise ValueError("QuantSpec: observer_options must be a mapping or (key, value) pairs, "
                         f"got {options!r}") from None
    for key, value in pairs:
        if not isinstance(key, str):
            raise ValueError(f"QuantSpec: observer_options keys must be str, got {key!r}")
        if not isinstance(value, Hashable):
            raise ValueError(f"QuantSpec: observer_options[{key!r}] must be hashable (e.g. a "
                             f"tuple, not a list), got {value!r}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"QuantSpec: observer_options has duplicate keys: {sorted(keys)}")
    return tuple(sorted(pairs))
