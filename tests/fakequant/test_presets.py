"""Presets: the paper's weight schemes at 8 and 4 bits, activation specs, and Quantizers built
from them with the real observers."""

import pytest
import torch

from intq.fakequant import (
    SCHEMES,
    Quantizer,
    QuantSpec,
    activation_spec,
    qat_activation_spec,
    weight_spec,
)

EXPECTED = {
    "asym-per-layer": {"symmetric": False, "narrow_range": False, "per_channel": False},
    "sym-per-channel": {"symmetric": True, "narrow_range": True, "per_channel": True},
    "asym-per-channel": {"symmetric": False, "narrow_range": False, "per_channel": True},
}


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_weight_schemes(scheme, bits):
    spec = weight_spec(scheme, bits)
    want = QuantSpec(bits=bits, signed=True, axis=0, observer="minmax", **EXPECTED[scheme])
    assert spec == want
    w = torch.randn(6, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    w = w * torch.logspace(-3, 0, 6).reshape(6, 1, 1, 1)
    y = Quantizer(spec)(w)
    assert y.shape == w.shape
    error = (y - w).abs().amax(dim=(1, 2, 3)) / (w.amax(dim=(1, 2, 3)) - w.amin(dim=(1, 2, 3)))
    if spec.per_channel:  # each channel keeps its own resolution: error <= half a step
        assert torch.all(error <= 1 / (2**bits - 2))
    else:  # one scale for channels 1000x apart: the smallest channel rounds away
        assert error[0] > 0.25 and error[-1] <= 1 / (2**bits - 2)


def test_sym_per_channel_8bit_is_tflite_weight_quantization():
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    quantizer = Quantizer(weight_spec("sym-per-channel", 8))
    quantizer(w)
    amax = w.abs().amax(dim=1)
    assert torch.equal(quantizer.scale, (amax.double() / 127).float())
    assert torch.equal(quantizer.zero_point, torch.zeros(4, dtype=torch.int32))
    assert (quantizer.spec.qmin, quantizer.spec.qmax) == (-127, 127)


def test_activation_specs():
    assert activation_spec() == QuantSpec()
    assert activation_spec(signed=False).qmin == 0
    assert activation_spec(observer="kl", bins=1024).options == {"bins": 1024}
    qat = qat_activation_spec()
    assert qat.observer == "ema" and qat.options == {"decay": 0.999} and not qat.per_channel
    quantizer = Quantizer(qat)
    quantizer(torch.randn(2, 3, 4, 4))
    assert quantizer.observer.decay == 0.999


def test_unknown_scheme():
    with pytest.raises(ValueError, match=r"weight_spec: scheme must be one of \('asym-per-layer'"):
        weight_spec("sym-per-layer")
