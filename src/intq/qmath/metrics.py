"""Quantization error metrics in float64: SQNR (dB), mean squared error, max absolute error.

Inputs are torch tensors or numpy arrays of equal, non-empty shape without NaN/Inf; results are
Python floats.
"""

import math

import numpy as np

from intq.qmath._checks import check_finite, to_numpy

__all__ = ["max_abs_error", "mse", "sqnr_db"]


def sqnr_db(reference, approx) -> float:
    """10·log10(Σ reference² / Σ (reference - approx)²) in dB.

    +inf when approx equals reference (including both all-zero); -inf when the reference is
    all zero and approx is not (no signal, some noise).

    >>> sqnr_db(np.array([1.0, -2.0]), np.array([1.0, -2.1]))  # 10·log10(5 / 0.01)
    26.98970004336...
    """
    ref, app = _pair(reference, approx, "sqnr_db")
    noise = float(np.sum((ref - app) ** 2))
    if noise == 0.0:
        return math.inf
    signal = float(np.sum(ref**2))
    return -math.inf if signal == 0.0 else 10.0 * math.log10(signal / noise)


def mse(reference, approx) -> float:
    """Mean of (reference - approx)²."""
    ref, app = _pair(reference, approx, "mse")
    return float(np.mean((ref - app) ** 2))


def max_abs_error(reference, approx) -> float:
    """max |reference - approx|."""
    ref, app = _pair(reference, approx, "max_abs_error")
    return float(np.max(np.abs(ref - app)))


def _pair(reference, approx, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validated float64 numpy copies of two same-shape, non-empty, finite inputs."""
    ref = to_numpy(reference).astype(np.float64)
    app = to_numpy(approx).astype(np.float64)
    if ref.shape != app.shape:
        raise ValueError(f"{where}: reference shape {ref.shape} != approx shape {app.shape}")
    if ref.size == 0:
        raise ValueError(f"{where}: inputs are empty")
    check_finite(ref, "reference", where)
    check_finite(app, "approx", where)
    return ref, app
