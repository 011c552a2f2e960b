"""NumPy ``.npy`` / ``.npz`` arrays read without unpickling, and only as far as needed.

The header of an array (a ``.npy`` file, or the member ``NAME.npy`` of a ``.npz`` archive)
is parsed first; then only the first ``n`` rows are read (decompressed, for a compressed
archive), never the whole array, and never more than ``limits.max_array_bytes()`` bytes
(``INTQ_MAX_ARRAY_BYTES``). A Fortran-ordered array is read whole (its rows are not
contiguous), so the limit applies to all of it. Every failure is one ``IntqError`` line.
"""

from __future__ import annotations

import contextlib
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from intq.errors import IntqError
from intq.limits import max_array_bytes

__all__ = ["array_names", "array_shape", "read_array"]

_KINDS = "biufc"  # bool, signed, unsigned, float, complex: plain numbers


def array_names(path: Path) -> list[str]:
    """The arrays of a ``.npz`` archive (member names without ``.npy``); ``["x"]`` for a
    ``.npy`` file."""
    if path.suffix == ".npy":
        return ["x"]
    with _reading(path), zipfile.ZipFile(path) as archive:
        return [name.removesuffix(".npy") for name in archive.namelist()]


def array_shape(path: Path, name: str = "x") -> tuple[int, ...]:
    """The shape of array ``name`` from its header alone."""
    with _member(path, name) as f:
        return _header(f, path)[0]


def read_array(path: Path, name: str = "x", n: int | None = None) -> np.ndarray:
    """Array ``name`` of ``path`` (its first ``n`` rows when ``n`` is given; a 0-d array as
    is), read-only, within the size limit."""
    with _member(path, name) as f:
        shape, fortran, dtype = _header(f, path)
        rows = shape if n is None or not shape or fortran else (min(n, shape[0]), *shape[1:])
        count = math.prod(rows)
        _check_size(path, name, count * dtype.itemsize, None if rows == shape else n)
        with _reading(path):
            data = f.read(count * dtype.itemsize)
        if len(data) < count * dtype.itemsize:
            raise IntqError(f"cannot read {path}: array '{name}' ends after {len(data)} of "
                            f"{count * dtype.itemsize} bytes (a truncated file?)")
        array = np.frombuffer(data, dtype, count).reshape(rows, order="F" if fortran else "C")
    return array if n is None or not shape else array[:n]


@contextlib.contextmanager
def _member(path: Path, name: str) -> Iterator[BinaryIO]:
    """The byte stream of array ``name``: the ``.npy`` file, or the archive's member."""
    if path.suffix == ".npy":
        with _reading(path), path.open("rb") as f:
            yield f
        return
    with _reading(path), zipfile.ZipFile(path) as archive:
        members = archive.namelist()
        member = next((m for m in (f"{name}.npy", name) if m in members), None)
        if member is None:
            raise KeyError(name)
        with _reading(path), archive.open(member) as f:
            yield f


def _header(f: BinaryIO, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    with _reading(path):
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise IntqError(f"cannot read {path}: .npy format version {version} is not "
                            "supported; save with np.save / np.savez")
    if dtype.hasobject:
        raise IntqError(f"{path} holds Python objects, which intq never unpickles; "
                        "save plain numeric arrays (np.save / np.savez)")
    if dtype.kind not in _KINDS or dtype.itemsize == 0:
        raise IntqError(f"cannot read {path}: it holds {dtype} values, not plain numbers")
    return tuple(int(d) for d in shape), bool(fortran), dtype


def _check_size(path: Path, name: str, size: int, n: int | None) -> None:
    limit = max_array_bytes()
    if size > limit:
        what = "" if n is None else f" (the first {n} rows)"
        raise IntqError(f"{path}: array '{name}'{what} takes {_bytes(size)} decompressed, more "
                        f"than the limit of {_bytes(limit)}; read fewer samples, or raise "
                        "INTQ_MAX_ARRAY_BYTES")


def _bytes(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Malformed files raise many types (numpy, zipfile, zlib, struct): one IntqError."""
    try:
        yield
    except (IntqError, KeyError):
        raise
    except ValueError as exc:
        raise IntqError(f"cannot read {path}: {_value_error(exc)}") from None
    except Exception as exc:
        raise IntqError(f"cannot read {path}: {type(exc).__name__}: {_first_line(exc)}"
                        ) from None


def _value_error(exc: ValueError) -> str:
    text = str(exc)
    if "max_header_size" in text or "large and may not be safe" in text:
        return "its .npy header is too large to be a plain array's (over 10000 bytes)"
    if "pickle" in text or "magic string is not correct" in text:
        return "not a NumPy .npy/.npz file (intq never unpickles)"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
