"""Independent references for the observer tests: exact binning, EMA sums, TensorRT's KL loop."""

from fractions import Fraction
from math import floor

import numpy as np
import torch

MIN_EXPONENT = -100


def assert_same_state(a: torch.nn.Module, b: torch.nn.Module, ignore: tuple[str, ...] = ()) -> None:
    """Every buffer of ``a`` and ``b`` except ``ignore`` is identical (shape, dtype, values)."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa.keys() - set(ignore):
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), f"{key}: {sa[key]} != {sb[key]}"


def ref_exponent(lo: float, hi: float, bins: int) -> int:
    """Smallest e >= -100 with floor(hi/2^e) - floor(lo/2^e) <= bins - 1, in exact rationals."""
    lo_q, hi_q = Fraction(min(lo, 0.0)), Fraction(max(hi, 0.0))
    e = MIN_EXPONENT
    while floor(hi_q / Fraction(2) ** e) - floor(lo_q / Fraction(2) ** e) > bins - 1:
        e += 1
    return e


def ref_counts(
    values: np.ndarray, exponent: int, bins: int, lo: float = 0.0
) -> tuple[int, np.ndarray]:
    """(offset, counts) of ``values`` at bin width 2^exponent: bin k is [k·2^e, (k+1)·2^e); the
    window starts at the bin of ``min(values, lo, 0)``.

    float64 ``ldexp`` is exact for float32 inputs, so ``floor`` gives the exact bin index.
    """
    index = np.floor(np.ldexp(values.astype(np.float64), -exponent)).astype(np.int64)
    offset = min(int(index.min()), int(np.floor(np.ldexp(np.float64(lo), -exponent))), 0)
    counts = np.bincount(index - offset, minlength=bins)
    assert counts.size == bins, "values span more than `bins` bins"
    return offset, counts


def ref_ema(batch_values: list[float], decay: float) -> float:
    """sum_i (1 - d)·d^(t-i)·b_i / (1 - d^t) in float64."""
    t = len(batch_values)
    total = sum((1 - decay) * decay ** (t - i) * b for i, b in enumerate(batch_values, start=1))
    return total / (1 - decay**t)


def ref_kl_threshold_bins(hist: np.ndarray, levels: int, eps: float = 1e-4) -> int:
    """TensorRT's entropy calibration, written as the loop of its pseudo-code.

    For i = levels..n: P = hist[:i] with the outliers added to P[i-1]; Q = hist[:i] merged into
    ``levels`` levels of i // levels bins (last level takes the rest), spread over the bins
    where P is non-zero; both smoothed and normalized; return the i minimizing KL(P || Q).
    """
    n = len(hist)
    best_i, best_kl = n, np.inf
    for i in range(levels, n + 1):
        p = hist[:i].astype(np.float64)
        p[i - 1] += hist[i:].sum()
        sliced = hist[:i].astype(np.float64)
        merged = i // levels
        q = np.zeros(i)
        for level in range(levels):
            start = level * merged
            stop = i if level == levels - 1 else start + merged
            nonzero = np.count_nonzero(p[start:stop])
            if nonzero:
                q[start:stop] = np.where(p[start:stop] != 0, sliced[start:stop].sum() / nonzero, 0)
        if sliced.sum() == 0:
            continue
        ps, qs = _smooth(p, eps), _smooth(q, eps)
        kl = float(np.sum(ps * np.log(ps / qs)))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return best_i


def _smooth(x: np.ndarray, eps: float) -> np.ndarray:
    zeros = x == 0
    taken = eps * zeros.sum() / max(int((~zeros).sum()), 1)
    smoothed = np.where(zeros, eps, np.maximum(x - taken, eps))
    return smoothed / smoothed.sum()


def fake_quantize_ref(x: np.ndarray, scale: float, zero_point: int, qmin: int, qmax: int):
    """(clamp(round_half_even(x/scale) + z, qmin, qmax) - z)·scale in float64."""
    q = np.clip(np.round(x / scale) + zero_point, qmin, qmax)
    return (q - zero_point) * scale
