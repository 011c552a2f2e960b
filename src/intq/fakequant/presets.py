"""Named QuantSpecs for the paper's schemes (Krishnamoorthi 2018, Table 2; TFLite int8 spec).

Weights (channel axis 0: Conv2d OIHW, Linear (out, in)):
  "asym-per-layer"    affine, one scale and zero point per tensor, int grid [-2^(b-1), 2^(b-1)-1]
  "sym-per-channel"   symmetric narrow [-(2^(b-1)-1), 2^(b-1)-1] per output channel (TFLite;
                      the paper's recommended default)
  "asym-per-channel"  affine per output channel
Activations: affine per tensor; min/max (or percentile, MSE, KL) for post-training calibration,
EMA of batch min/max with decay 0.999 for quantization-aware training (TF's choice).
"""

from intq.fakequant.spec import QuantSpec

__all__ = [
    "DEFAULT_WEIGHT_SCHEME",
    "SCHEMES",
    "activation_spec",
    "qat_activation_spec",
    "weight_spec",
]

SCHEMES = ("asym-per-layer", "sym-per-channel", "asym-per-channel")
DEFAULT_WEIGHT_SCHEME = "sym-per-channel"

_WEIGHT_SCHEMES = {
    "asym-per-layer": {"symmetric": False, "narrow_range": False, "per_channel": False},
    "sym-per-channel": {"symmetric": True, "narrow_range": True, "per_channel": True},
    "asym-per-channel": {"symmetric": False, "narrow_range": False, "per_channel": True},
}


def weight_spec(scheme: str = DEFAULT_WEIGHT_SCHEME, bits: int = 8, *, axis: int = 0,
                observer: str = "minmax", **observer_options) -> QuantSpec:
    """Signed weight QuantSpec of a paper scheme (one of SCHEMES) at `bits` (8 and 4 in the paper).

    >>> weight_spec("sym-per-channel", 4).describe()
    'int4 sym narrow per-channel(axis=0) minmax half_even'
    """
    if scheme not in _WEIGHT_SCHEMES:
        raise ValueError(f"weight_spec: scheme must be one of {SCHEMES}, got {scheme!r}")
    return QuantSpec(bits=bits, signed=True, axis=axis, observer=observer,
                     observer_options=observer_options, **_WEIGHT_SCHEMES[scheme])


def activation_spec(bits: int = 8, observer: str = "minmax", *, signed: bool = True,
                    **observer_options) -> QuantSpec:
    """Per-tensor affine activation QuantSpec (TFLite: int8 [-128, 127]; signed=False: uint8).

    >>> activation_spec(observer="percentile", percentile=99.99).describe()
    'int8 asym per-tensor percentile percentile=99.99 half_even'
    """
    return QuantSpec(bits=bits, symmetric=False, narrow_range=False, signed=signed,
                     per_channel=False, observer=observer, observer_options=observer_options)


def qat_activation_spec(bits: int = 8, decay: float = 0.999, *, signed: bool = True) -> QuantSpec:
    """Activation QuantSpec for QAT: EMA of batch min/max (the paper / TF: decay 0.999)."""
    return activation_spec(bits, "ema", signed=signed, decay=decay)
