"""Input validation shared by the qmath functions: ValueErrors that name the function and value.

The quantization parameters are small (one value per tensor or per channel), so they are
checked on a numpy copy; only the finiteness of the data itself is checked in torch.
"""

import numpy as np
import torch

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def check_grid(qmin: int, qmax: int, where: str) -> None:
    """Require Python/numpy integers with int32 min <= qmin < qmax <= int32 max."""
    for name, value in (("qmin", qmin), ("qmax", qmax)):
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ValueError(f"{where}: {name} must be an int, got {value!r}")
    if not _INT32_MIN <= qmin < qmax <= _INT32_MAX:
        raise ValueError(f"{where}: need int32 qmin < qmax, got qmin={qmin}, qmax={qmax}")


def to_numpy(value: torch.Tensor | np.ndarray | float) -> np.ndarray:
    """A numpy view/copy of a tensor, array or scalar (for checking small parameter tensors)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def first_index(mask: np.ndarray) -> tuple[int, ...]:
    """Index of the first True element of a boolean array (the empty tuple for 0-d)."""
    return tuple(int(i) for i in np.argwhere(mask)[0])


def check_finite(t: torch.Tensor | np.ndarray, name: str, where: str) -> None:
    """Raise when a float tensor/array holds NaN or +-Inf, naming the first offending index.

    Fast path: a finite sum proves every element finite (NaN and Inf propagate into the sum);
    only a non-finite sum (or an overflowing one) pays for the elementwise test.
    """
    if isinstance(t, torch.Tensor):
        if bool(torch.isfinite(t.sum())):
            return
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.sum(t)):
                return
    bad = ~(torch.isfinite(t) if isinstance(t, torch.Tensor) else np.isfinite(t))
    if bool(bad.any()):
        index = first_index(to_numpy(bad))
        value = to_numpy(t)[index]
        raise ValueError(f"{where}: {name} must be finite, got {value} at index {index}")


def check_qparams(scale, zero_point, qmin: int, qmax: int, where: str) -> None:
    """Require a positive finite float scale (0-d or 1-D) and an integer zero point in range.

    The zero point has the scale's shape, or is a single value shared by all channels.
    """
    check_grid(qmin, qmax, where)
    s, z = to_numpy(scale), to_numpy(zero_point)
    if s.dtype.kind != "f":
        raise ValueError(f"{where}: scale must be a float tensor, got dtype {s.dtype}")
    if s.ndim > 1 or s.size == 0:
        raise ValueError(f"{where}: scale must be 0-d or 1-D and non-empty, got shape {s.shape}")
    check_finite(s, "scale", where)
    if (s <= 0).any():
        index = first_index(s <= 0)
        raise ValueError(f"{where}: scale must be > 0, got {s[index]} at index {index}")
    if z.size != 1 and z.shape != s.shape:
        raise ValueError(f"{where}: zero_point shape {z.shape} does not match scale shape "
                         f"{s.shape}")
    if z.dtype.kind not in "iuf" or (z.dtype.kind == "f" and not np.all(np.isfinite(z))):
        raise ValueError(f"{where}: zero_point must hold integers, got {z}")
    outside = (z < qmin) | (z > qmax) | (z != np.round(z))
    if outside.any():
        index = first_index(np.atleast_1d(outside))
        raise ValueError(f"{where}: zero_point must be an integer in [{qmin}, {qmax}], got "
                         f"{np.atleast_1d(z)[index]} at index {index}")


def channel_shape(x_shape: tuple[int, ...], scale_size: int, axis: int | None, where: str):
    """Shape that broadcasts per-channel parameters along `axis` of x (None: per-tensor).

    Per-tensor parameters must hold one value; per-channel ones one value per x.shape[axis].
    """
    if axis is None:
        if scale_size != 1:
            raise ValueError(f"{where}: {scale_size} scales need axis= (the channel axis); "
                             "pass axis or a single scale")
        return ()
    ndim = len(x_shape)
    if isinstance(axis, bool) or not isinstance(axis, int) or not -ndim <= axis < ndim:
        raise ValueError(f"{where}: axis must be an int in [{-ndim}, {ndim - 1}] for a "
                         f"{ndim}-d tensor, got {axis!r}")
    axis %= ndim
    if scale_size != x_shape[axis]:
        raise ValueError(f"{where}: {scale_size} scales for axis {axis} of size {x_shape[axis]}; "
                         "need one scale per channel")
    return tuple(-1 if d == axis else 1 for d in range(ndim))
