"""Read IDX files (the MNIST/Fashion-MNIST container format), plain or gzip-compressed.

Layout: 2 zero bytes, a type byte, a rank byte, `rank` big-endian uint32 dimensions,
then the data in C order, big-endian.
"""

import gzip
from pathlib import Path

import numpy as np

from intq.errors import IntqError

__all__ = ["read_idx"]

_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Return the array stored in an IDX file (``.gz`` is decompressed), native byte order."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise IntqError(f"cannot read IDX file {path}: {exc}") from None
    return _parse_idx(raw, path)


def _parse_idx(raw: bytes, path: Path) -> np.ndarray:
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise IntqError(f"{path} is not an IDX file (bad magic number)")
    dtype, rank = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * rank
    if len(raw) < header:
        raise IntqError(f"{path}: IDX header truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise IntqError(
            f"{path}: IDX data has {len(raw) - header} bytes, shape {shape} needs "
            f"{count * dtype.itemsize}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header, count=count)
    return data.reshape(shape).astype(dtype.newbyteorder("="))
