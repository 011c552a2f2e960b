"""Observer factory: build a range estimator from a kind name and options (used by fakequant)."""

from __future__ import annotations

import inspect
from typing import Any

from intq.observers.base import Observer
from intq.observers.ema import EMAObserver
from intq.observers.kl import KLObserver
from intq.observers.minmax import MinMaxObserver
from intq.observers.mse import MSEObserver, TensorMSEObserver
from intq.observers.percentile import PercentileObserver

__all__ = ["OBSERVER_KINDS", "make_observer"]

OBSERVER_KINDS = ("minmax", "ema", "percentile", "mse", "kl")
"""Names accepted by ``make_observer``."""

_CLASSES: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "ema": EMAObserver,
    "percentile": PercentileObserver,
    "kl": KLObserver,
}
_MSE_SOURCES = {"histogram": MSEObserver, "tensor": TensorMSEObserver}
_COMMON = ("per_channel", "axis", "bits", "symmetric")


def make_observer(
    kind: str,
    *,
    per_channel: bool = False,
    axis: int = 0,
    bits: int = 8,
    symmetric: bool = False,
    **options: Any,
) -> Observer:
    """A fresh observer of ``kind`` (one of ``OBSERVER_KINDS``) with kind-specific ``options``.

    Options: ema ``decay``; percentile ``percentile``, ``bins``; kl ``bins``; mse ``source``
    (``"tensor"``: search on the latest tensor, for weights; ``"histogram"``: on a histogram of
    everything observed, for activations; default ``"tensor"`` per channel, else
    ``"histogram"``) and, for the histogram, ``bins``. Unknown kinds or options: ``ValueError``.
    """
    if kind not in OBSERVER_KINDS:
        raise ValueError(f"unknown observer kind {kind!r}; allowed: {', '.join(OBSERVER_KINDS)}")
    if kind == "mse":
        source = options.pop("source", "tensor" if per_channel else "histogram")
        if source not in _MSE_SOURCES:
            raise ValueError(
                f"mse observer: unknown source {source!r}; allowed: {', '.join(_MSE_SOURCES)}"
            )
        cls = _MSE_SOURCES[source]
    else:
        cls = _CLASSES[kind]
    allowed = [name for name in inspect.signature(cls).parameters if name not in _COMMON]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        allowed_text = ", ".join((["source"] if kind == "mse" else []) + allowed) or "none"
        raise ValueError(
            f"{kind} observer ({cls.__name__}): unknown option(s) {', '.join(unknown)}; "
            f"allowed: {allowed_text}"
        )
    return cls(per_channel=per_channel, axis=axis, bits=bits, symmetric=symmetric, **options)
