"""Exact integer accumulators (conv, linear, pools) on float64 BLAS, and lossless window ops.

Inputs are integer-valued float64 arrays with the zero point already subtracted, so padding
with 0 here is padding with the zero point in the quantized domain. Products of 16-bit
values are < 2^32 and a sum of K of them stays below 2^53 for K < 2^21, so every float64
result is the exact integer; `check_exact` enforces that bound. Loops run over kernel taps,
never over pixels.
"""

import functools

import numpy as np

from intq.convert.shapes import conv_output_size

__all__ = [
    "check_exact",
    "conv2d_accumulate",
    "linear_accumulate",
    "max_pool2d",
    "sum_pool2d",
]

_EXACT = 2.0**53


def check_exact(x: np.ndarray, w: np.ndarray, terms: int, where: str) -> None:
    """Raise unless terms·max|x|·max|w| < 2^53 (float64 sums of products are then exact)."""
    bound = terms * float(np.abs(x).max(initial=0)) * float(np.abs(w).max(initial=0))
    if bound >= _EXACT:
        raise ValueError(f"{where}: {terms} products of up to {np.abs(x).max()}·"
                         f"{np.abs(w).max()} may exceed 2^53, float64 accumulation is not exact")


def _pad_hw(x: np.ndarray, padding: tuple[int, int, int, int], value: float = 0) -> np.ndarray:
    top, left, bottom, right = padding
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _taps(xp: np.ndarray, kernel, stride, dilation, out_hw):
    """Yield (i, j, view) with view[n, c, oh, ow] = xp[n, c, oh·sh + i·dh, ow·sw + j·dw]."""
    (kh, kw), (sh, sw), (dh, dw), (ho, wo) = kernel, stride, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            r, c = i * dh, j * dw
            yield i, j, xp[:, :, r:r + sh * (ho - 1) + 1:sh, c:c + sw * (wo - 1) + 1:sw]


def _out_hw(x: np.ndarray, kernel, stride, padding, dilation=(1, 1)) -> tuple[int, int]:
    top, left, bottom, right = padding
    return (conv_output_size(x.shape[2], kernel[0], stride[0], top, bottom, dilation[0]),
            conv_output_size(x.shape[3], kernel[1], stride[1], left, right, dilation[1]))


def conv2d_accumulate(x: np.ndarray, w: np.ndarray, stride, padding, dilation,
                      groups: int) -> np.ndarray:
    """Σ_{c, i, j} x[n, g·Cg + c, oh·sh + i·dh - top, ...]·w[o, c, i, j] (ONNX Conv), float64.

    x: (N, C, H, W) centered input; w: (O, C/groups, kh, kw) centered weights.
    """
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    ho, wo = _out_hw(x, (kh, kw), stride, padding, dilation)
    wg = w.reshape(groups, o // groups, cg, kh, kw)
    acc = np.zeros((n, groups, o // groups, ho, wo))
    for i, j, tap in _taps(_pad_hw(x, padding), (kh, kw), stride, dilation, (ho, wo)):
        acc += np.einsum("ngchw,goc->ngohw", tap.reshape(n, groups, cg, ho, wo),
                         wg[:, :, :, i, j], optimize=True)
    return acc.reshape(n, o, ho, wo)


def linear_accumulate(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x (N, K) @ w (O, K)ᵀ in float64 (exact for integer values, see module docstring)."""
    return x @ w.T


def sum_pool2d(x: np.ndarray, kernel, stride, padding) -> np.ndarray:
    """Σ over each kh×kw window of the zero-padded centered input (count_include_pad)."""
    ho, wo = _out_hw(x, kernel, stride, padding)
    acc = np.zeros(x.shape[:2] + (ho, wo))
    for _, _, tap in _taps(_pad_hw(x, padding), kernel, stride, (1, 1), (ho, wo)):
        acc += tap
    return acc


def max_pool2d(x: np.ndarray, kernel, stride, padding, dilation) -> np.ndarray:
    """Window maximum of an integer array; padding uses the dtype minimum, never selected
    because every window holds at least one real pixel (checked by QMaxPool2d)."""
    ho, wo = _out_hw(x, kernel, stride, padding, dilation)
    xp = _pad_hw(x, padding, np.iinfo(x.dtype).min)
    taps = (tap for _, _, tap in _taps(xp, kernel, stride, dilation, (ho, wo)))
    return functools.reduce(np.maximum, taps)
