"""Integer grids of a b-bit quantizer: the [qmin, qmax] interval for 2..16 bits.

Conventions (N = 2^b levels):

| signed | narrow | range                     | 8 bits       |
|--------|--------|---------------------------|--------------|
| yes    | no     | [-2^(b-1), 2^(b-1) - 1]   | [-128, 127]  |
| yes    | yes    | [-(2^(b-1) - 1), 2^(b-1) - 1] | [-127, 127] |
| no     | no     | [0, 2^b - 1]              | [0, 255]     |
| no     | yes    | [0, 2^b - 2]              | [0, 254]     |

Narrow drops one level so that the grid is symmetric around its midpoint: signed narrow is the
TFLite weight range; unsigned narrow drops the *top* level, so with zero point 2^(b-1) - 1
(127 at 8 bits) it is the unsigned image of the signed narrow grid.
"""

__all__ = ["MAX_BITS", "MIN_BITS", "qrange"]

MIN_BITS = 2
MAX_BITS = 16


def qrange(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """Return (qmin, qmax) of the b-bit grid, per the table in this module's docstring.

    >>> qrange(8, signed=True), qrange(8, signed=True, narrow=True), qrange(4, signed=False)
    ((-128, 127), (-127, 127), (0, 15))
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f"qrange: bits must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    if signed:
        half = 1 << (bits - 1)
        return (-half + 1 if narrow else -half), half - 1
    top = (1 << bits) - 1
    return 0, (top - 1 if narrow else top)
