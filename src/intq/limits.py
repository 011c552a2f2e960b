"""What an input from outside may cost: the limits, each set by an environment variable.

- ``INTQ_MAX_ARRAY_BYTES`` (default 4 GiB): the decompressed bytes read from one ``.npy`` /
  ``.npz`` array;
- ``INTQ_ORT_SECONDS`` (default 600): one ONNX Runtime run of a model given to ``eval`` /
  ``bench``;
- ``INTQ_ORT_MEMORY_BYTES`` (default 4 GiB): ONNX Runtime's tensor memory for such models.

A value that is not a positive number is a ``UsageError`` naming the variable.
"""

from __future__ import annotations

import math
import os

from intq.errors import UsageError

__all__ = ["max_array_bytes", "ort_memory_bytes", "ort_seconds"]

_GIB = 1 << 30


def max_array_bytes() -> int:
    """Bytes one array read from a ``.npy`` / ``.npz`` file may take once decompressed."""
    return int(_positive("INTQ_MAX_ARRAY_BYTES", 4 * _GIB))


def ort_seconds() -> float:
    """Seconds one ONNX Runtime run of an outside model may take before it is stopped."""
    return _positive("INTQ_ORT_SECONDS", 600.0)


def ort_memory_bytes() -> int:
    """Bytes of tensor memory ONNX Runtime may allocate for outside models."""
    return int(_positive("INTQ_ORT_MEMORY_BYTES", 4 * _GIB))


def _positive(name: str, default: float) -> float:
    text = os.environ.get(name)
    if text is None or text == "":
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"environment variable {name}={text!r}: give a positive number")
    return value
