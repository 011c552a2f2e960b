"""read_idx against IDX files written byte by byte in the test (plain, gzip, malformed)."""

import gzip
import struct

import numpy as np
import pytest

from intq.errors import IntqError
from intq.zoo.idx import read_idx


def _idx_bytes(type_code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    header = bytes([0, 0, type_code, len(shape)])
    return header + b"".join(struct.pack(">I", d) for d in shape) + payload


def test_uint8_images_plain_and_gzip_read_identically(tmp_path):
    payload = bytes(range(2 * 3 * 4))
    raw = _idx_bytes(0x08, (2, 3, 4), payload)
    (tmp_path / "a.idx").write_bytes(raw)
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(raw))
    expected = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        got = read_idx(tmp_path / name)
        assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
        np.testing.assert_array_equal(got, expected)


def test_labels_rank_one(tmp_path):
    (tmp_path / "l.idx").write_bytes(_idx_bytes(0x08, (5,), bytes([9, 0, 3, 3, 7])))
    np.testing.assert_array_equal(read_idx(tmp_path / "l.idx"), [9, 0, 3, 3, 7])


def test_big_endian_int32_and_float32_become_native(tmp_path):
    ints = [1, -2, 70000, -(2**31)]
    (tmp_path / "i.idx").write_bytes(_idx_bytes(0x0C, (4,), struct.pack(">4i", *ints)))
    got = read_idx(tmp_path / "i.idx")
    assert got.dtype == np.dtype("int32") and got.dtype.isnative
    assert got.tolist() == ints
    floats = [0.5, -1.25, 3.0e38]
    (tmp_path / "f.idx").write_bytes(_idx_bytes(0x0D, (1, 3), struct.pack(">3f", *floats)))
    got = read_idx(tmp_path / "f.idx")
    assert got.dtype == np.dtype("float32") and got.dtype.isnative
    assert got.tolist() == [[0.5, -1.25, np.float32(3.0e38)]]


def test_signed_bytes(tmp_path):
    (tmp_path / "s.idx").write_bytes(_idx_bytes(0x09, (3,), bytes([0xFF, 0x80, 0x7F])))
    assert read_idx(tmp_path / "s.idx").tolist() == [-1, -128, 127]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "bad magic"),
        (b"\x00\x00", "bad magic"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x01", "header truncated"),
        (_idx_bytes(0x08, (2, 3), bytes(5)), "needs 6"),
        (_idx_bytes(0x08, (2, 3), bytes(7)), "needs 6"),
        (_idx_bytes(0x0C, (2,), bytes(4)), "needs 8"),
    ],
)
def test_malformed_files_raise_one_line_errors(tmp_path, raw, message):
    path = tmp_path / "bad.idx"
    path.write_bytes(raw)
    with pytest.raises(IntqError, match=message):
        read_idx(path)


def test_corrupt_gzip_and_missing_file(tmp_path):
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(gzip.compress(_idx_bytes(0x08, (4,), bytes(4)))[:-6])
    with pytest.raises(IntqError, match="cannot read IDX file"):
        read_idx(path)
    with pytest.raises(IntqError, match="cannot read IDX file"):
        read_idx(tmp_path / "missing.idx")
