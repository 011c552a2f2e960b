"""qrange: the integer grid of every bit width and flavour, and its validation."""

import pytest

from intq.qmath import qrange


@pytest.mark.parametrize("bits", range(2, 17))
def test_level_counts_and_symmetry(bits):
    levels = 2**bits
    lo, hi = qrange(bits, signed=True)
    assert (lo, hi) == (-(levels // 2), levels // 2 - 1)
    lo, hi = qrange(bits, signed=True, narrow=True)
    assert (lo, hi) == (-(levels // 2 - 1), levels // 2 - 1)
    assert qrange(bits, signed=False) == (0, levels - 1)
    assert qrange(bits, signed=False, narrow=True) == (0, levels - 2)


def test_known_grids():
    assert qrange(8, True) == (-128, 127)
    assert qrange(8, True, narrow=True) == (-127, 127)
    assert qrange(8, False) == (0, 255)
    assert qrange(8, False, narrow=True) == (0, 254)
    assert qrange(4, True) == (-8, 7)
    assert qrange(2, True, narrow=True) == (-1, 1)
    assert qrange(16, False) == (0, 65535)


@pytest.mark.parametrize("bits", [1, 0, 17, -8, 8.0, True, "8", None])
def test_bits_outside_2_to_16_rejected(bits):
    with pytest.raises(ValueError, match=r"qrange: bits must be an integer in 2\.\.16, got"):
        qrange(bits, signed=True)
