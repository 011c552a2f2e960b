"""Simulated quantization: STE autograd Functions, QuantSpec, the Quantizer module, presets.

Forward passes compute intq.qmath.fake_quantize; gradients pass straight through inside the
grid range and are zero where values clip (PAPER.md 2).
"""

from intq.fakequant.lsq import FakeQuantizeLSQ, fake_quantize_lsq, lsq_grad_factor
from intq.fakequant.presets import (
    DEFAULT_WEIGHT_SCHEME,
    SCHEMES,
    activation_spec,
    qat_activation_spec,
    weight_spec,
)
from intq.fakequant.quantizer import Quantizer, make_observer
from intq.fakequant.spec import OBSERVERS, QuantSpec
from intq.fakequant.ste import (
    FakeQuantizeHalfAwaySTE,
    FakeQuantizeHalfEvenSTE,
    FakeQuantizeStochasticSTE,
    fake_quantize_half_even_clamped_ste,
    fake_quantize_ste,
)

__all__ = [
    # configuration
    "OBSERVERS",
    "QuantSpec",
    # presets
    "DEFAULT_WEIGHT_SCHEME",
    "SCHEMES",
    "activation_spec",
    "qat_activation_spec",
    "weight_spec",
    # modules
    "Quantizer",
    "make_observer",
    # straight-through fake quantization
    "FakeQuantizeHalfAwaySTE",
    "FakeQuantizeHalfEvenSTE",
    "FakeQuantizeStochasticSTE",
    "fake_quantize_half_even_clamped_ste",
    "fake_quantize_ste",
    # extension: learned step size (LSQ)
    "FakeQuantizeLSQ",
    "fake_quantize_lsq",
    "lsq_grad_factor",
]
