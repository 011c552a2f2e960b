"""Independent references for the runtime tests: torch float64 convolutions, Python-int
fixed point and exact-rational FMA, written from the specs (never calling intq.runtime)."""

import math
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

f32 = np.float32


def conv_acc(x, zx, w, zw, bias, stride, padding, dilation, groups) -> np.ndarray:
    """Σ (x - zx)(w - zw) + bias with padding by zx, as torch float64 conv2d (exact)."""
    top, left, bottom, right = padding
    xc = F.pad(torch.from_numpy(x.astype(np.float64) - zx), (left, right, top, bottom))
    wc = torch.from_numpy(w.astype(np.float64) - zw)
    acc = F.conv2d(xc, wc, stride=stride, dilation=dilation, groups=groups).numpy()
    return acc + (0 if bias is None else bias.reshape(1, -1, 1, 1))


def round_half_even(v: Fraction) -> int:
    return round(v)


def round_half_away(v: Fraction) -> int:
    m = math.floor(abs(v) + Fraction(1, 2))
    return m if v >= 0 else -m


def requant_float32(acc: np.ndarray, mult, zp: int, qmin: int, qmax: int) -> np.ndarray:
    """clamp(round_half_even(float32(acc)·float32(m)) + zp): one IEEE float32 multiply."""
    m = np.broadcast_to(np.asarray(mult, f32).reshape((-1,) + (1,) * (acc.ndim - 2)), acc.shape)
    out = [min(qmax, max(qmin, round_half_even(Fraction(float(f32(a) * mm))) + zp))
           for a, mm in zip(acc.ravel().tolist(), m.ravel().tolist(), strict=True)]
    return np.array(out).reshape(acc.shape)


def mbqm(acc: int, m0: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier: SRDHM (half up) then RoundingDivideByPOT (away)."""
    left, right = max(shift, 0), max(-shift, 0)
    high = math.floor(Fraction(acc * 2**left * m0, 2**31) + Fraction(1, 2))
    return round_half_away(Fraction(high, 2**right))


def requant_fixed(acc: np.ndarray, m0, shift, zp: int, qmin: int, qmax: int) -> np.ndarray:
    shape = (-1,) + (1,) * (acc.ndim - 2)
    m0 = np.broadcast_to(np.asarray(m0).reshape(shape), acc.shape).ravel().tolist()
    shift = np.broadcast_to(np.asarray(shift).reshape(shape), acc.shape).ravel().tolist()
    out = [min(qmax, max(qmin, mbqm(int(a), m, s) + zp))
           for a, m, s in zip(acc.ravel().tolist(), m0, shift, strict=True)]
    return np.array(out).reshape(acc.shape)


def tflite_add(a: int, b: int, za: int, zb: int, zy: int, r, qmin: int, qmax: int) -> int:
    """TFLite reference AddElementwise (8-bit) on Python ints."""
    sa = mbqm((a - za) * 2**r.left_shift, r.m0_a, r.shift_a)
    sb = mbqm((b - zb) * 2**r.left_shift, r.m0_b, r.shift_b)
    return min(qmax, max(qmin, mbqm(sa + sb, r.m0_out, r.shift_out) + zy))


def nearest_f32(v: Fraction) -> np.float32:
    """The float32 nearest to the rational v, ties to the even significand."""
    r = f32(float(v))
    cands = [np.nextafter(r, f32(-np.inf)), r, np.nextafter(r, f32(np.inf))]
    return min(cands, key=lambda c: (abs(Fraction(float(c)) - v),
                                     int(np.array(c).view(np.uint32)) & 1))


def fma_f32(a, b, c) -> np.float32:
    """float32 a·b + c rounded once, from exact rationals."""
    return nearest_f32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))
