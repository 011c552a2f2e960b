"""Float -> integer-valued float rounding modes, torch and numpy side by side.

- half even: nearest integer, ties to the even one (IEEE default, ONNX QuantizeLinear).
- half away: nearest integer, ties away from zero (C `round`, TFLite's reference quantize).
- stochastic: floor(v) + 1 with probability frac(v) = v - floor(v), else floor(v), so
  E[round(v)] = v (up to the 2^-24 resolution of the uniform draw). Training only.

Each function returns a tensor/array of the input's dtype holding integers.
"""

import numpy as np
import torch

__all__ = [
    "round_half_away",
    "round_half_away_np",
    "round_half_even",
    "round_half_even_np",
    "round_stochastic",
]


def round_half_even(v: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties to even: 0.5 -> 0, 1.5 -> 2, -2.5 -> -2."""
    return torch.round(v)


def round_half_away(v: torch.Tensor) -> torch.Tensor:
    """Round to nearest, ties away from zero: 0.5 -> 1, -2.5 -> -3.

    Computed as trunc(v) + sign(v)·[|v - trunc(v)| >= 1/2]; `v - trunc(v)` is exact in floating
    point, unlike `floor(|v| + 0.5)`, which rounds 0.49999997 up in float32.
    """
    whole = torch.trunc(v)
    frac = v - whole
    return whole + torch.sign(frac) * (frac.abs() >= 0.5).to(v.dtype)


def round_stochastic(v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round down or up at random, up with probability v - floor(v): unbiased, E = v.

    The uniform draw comes from `generator` (seed it for reproducible results).
    """
    low = torch.floor(v)
    u = torch.rand(v.shape, generator=generator, dtype=v.dtype, device=v.device)
    return low + (u < v - low).to(v.dtype)


def round_half_even_np(v: np.ndarray) -> np.ndarray:
    """numpy twin of round_half_even."""
    return np.rint(v)


def round_half_away_np(v: np.ndarray) -> np.ndarray:
    """numpy twin of round_half_away."""
    whole = np.trunc(v)
    frac = v - whole
    return whole + np.sign(frac) * (np.abs(frac) >= 0.5)
