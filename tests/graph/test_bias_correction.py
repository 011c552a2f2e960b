"""Bias correction for weight quantization (Nagel et al. 2019): new_bias[o] = bias[o] -
Σ_{c,k} ΔW[o,c,k]·E[x_c], ΔW = Q(W) - W, checked against a float64 loop written here, for
conv (groups 1, grouped, depthwise) and linear, with and without a bias; InputMeans against
float64 means; and the property the correction exists for: on a conv without padding whose
input has the same per-channel mean at every pixel, the quantized-weight layer's mean output
after correction equals the float layer's."""

import numpy as np
import pytest
import torch
from torch import nn

from intq.fakequant import Quantizer, weight_spec
from intq.graph.bias_correction import InputMeans, correct_bias
from intq.graph.fused import FusedConv2d, FusedLinear
from intq.graph.place import quant_layers
from intq.graph.qmodules import QuantConv2d, QuantLinear
from intq.ptq import calibrate, prepare_ptq
from intq.recipes import get_recipe

from .helpers import fashion_mnist_batch
from .nets import build

# (in channels, out channels, groups) of the conv cases
CONVS = {"groups 1": (6, 4, 1), "grouped": (6, 4, 2), "depthwise": (6, 6, 6)}


def quant_layer(kind: str, bias: bool, scheme: str = "asym-per-layer", bits: int = 4,
                seed: int = 0):
    """A QuantConv2d (3x3, no padding) or QuantLinear (6 -> 5) with a calibrated, frozen
    weight quantizer; coarse weights (4-bit per-layer by default) so ΔW is large."""
    torch.manual_seed(seed)
    if kind == "linear":
        layer = QuantLinear(FusedLinear(nn.Linear(6, 5, bias=bias)),
                            Quantizer(weight_spec(scheme, bits)))
    else:
        cin, cout, groups = CONVS[kind]
        conv = nn.Conv2d(cin, cout, 3, groups=groups, bias=bias)
        layer = QuantConv2d(FusedConv2d(conv), Quantizer(weight_spec(scheme, bits)))
    q = layer.weight_quantizer
    q(layer.layer.weight.detach())
    q.calculate_qparams()
    q.observe, q.frozen = False, True
    return layer.eval()


def reference_shift(w: np.ndarray, wq: np.ndarray, mean: np.ndarray, groups: int) -> np.ndarray:
    """Σ_{c,k} (wq - w)[o,c,k]·mean[c] in float64, one output channel at a time; output
    channel o of a grouped conv reads input channels g·C/groups ... (g+1)·C/groups - 1 with
    g = o // (O/groups)."""
    out_channels, in_per_group = w.shape[:2]
    shift = np.zeros(out_channels)
    for o in range(out_channels):
        first = (o // (out_channels // groups)) * in_per_group
        for c in range(in_per_group):
            dw = wq[o, c].astype(np.float64) - w[o, c].astype(np.float64)
            shift[o] += dw.sum() * mean[first + c]
    return shift


def weights_and_groups(layer) -> tuple[np.ndarray, np.ndarray, int]:
    with torch.no_grad():
        wq = layer.quantized_weight()
    groups = 1 if isinstance(layer, QuantLinear) else layer.layer.groups
    return layer.layer.weight.detach().numpy(), wq.numpy(), groups


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no bias"])
@pytest.mark.parametrize("kind", [*CONVS, "linear"])
def test_new_bias_is_the_old_bias_minus_the_float64_shift(kind, bias):
    layer = quant_layer(kind, bias)
    channels = layer.layer.weight.shape[1] * (1 if kind == "linear" else layer.layer.groups)
    mean = torch.linspace(-1.5, 2.0, channels, dtype=torch.float64)
    old = layer.layer.bias.detach().double().numpy().copy() if bias else 0.0
    w, wq, groups = weights_and_groups(layer)
    want = old - reference_shift(w, wq, mean.numpy(), groups)
    assert np.abs(want - old).max() > 1e-3  # the correction is not a no-op here
    correct_bias(layer, mean)
    got = layer.layer.bias
    assert isinstance(got, nn.Parameter) and got.dtype == torch.float32
    np.testing.assert_allclose(got.detach().double().numpy(), want, rtol=0, atol=1e-6)


def test_correction_does_not_touch_the_weights_or_the_quantizer():
    layer = quant_layer("grouped", bias=True)
    weight, scale = layer.layer.weight.detach().clone(), layer.weight_quantizer.scale.clone()
    correct_bias(layer, torch.ones(6, dtype=torch.float64))
    assert torch.equal(layer.layer.weight, weight)
    assert torch.equal(layer.weight_quantizer.scale, scale)


def test_zero_input_mean_leaves_the_bias_alone():
    layer = quant_layer("groups 1", bias=True)
    before = layer.layer.bias.detach().clone()
    correct_bias(layer, torch.zeros(6, dtype=torch.float64))
    assert torch.equal(layer.layer.bias, before)


@pytest.mark.parametrize("kind", ["groups 1", "linear"])
def test_input_means_are_the_means_over_everything_but_channels(kind):
    layer = quant_layer(kind, bias=True)
    g = torch.Generator().manual_seed(3)
    shape = (6, 9, 7) if kind != "linear" else (6,)
    batches = [torch.randn(n, *shape, generator=g) * 2 + 0.5 for n in (3, 1, 4)]
    means = InputMeans(layer)
    with torch.no_grad():
        for x in batches:
            layer(x)
    all_x = np.concatenate([x.numpy().astype(np.float64) for x in batches])
    axes = tuple(d for d in range(all_x.ndim) if d != 1)
    # float32 sums over each sample's 63 positions, float64 across samples: ~1e-7 relative
    np.testing.assert_allclose(means.mean().numpy(), all_x.mean(axis=axes), rtol=1e-6)
    assert means.count == 8 * int(np.prod(shape[1:]))
    means.remove()
    layer(batches[0])
    assert means.count == 8 * int(np.prod(shape[1:]))  # removed: the hook no longer runs


def test_input_means_of_a_layer_that_never_ran_is_an_error():
    with pytest.raises(ValueError, match="never ran"):
        InputMeans(quant_layer("linear", bias=True)).mean()


def antithetic_inputs(channel_means: torch.Tensor, n: int = 4) -> torch.Tensor:
    """2n images (C, 10, 10): n random ones and their mirrors 2·m - x, so at every pixel the
    batch mean of channel c is exactly m_c (constant-mean inputs)."""
    g = torch.Generator().manual_seed(5)
    m = channel_means.reshape(1, -1, 1, 1)
    x = m + torch.randn(n, len(channel_means), 10, 10, generator=g)
    return torch.cat([x, 2 * m - x])


@pytest.mark.parametrize("kind", list(CONVS))
def test_corrected_layer_has_the_float_layers_mean_output(kind):
    """No padding, constant-mean input: E[conv(x, Q(W)) + b_new] = E[conv(x, W) + b] per
    output channel (up to float32 rounding), while without the correction the quantized
    layer's mean is off by Σ ΔW·E[x], far beyond that tolerance."""
    layer = quant_layer(kind, bias=True)
    x = antithetic_inputs(torch.tensor([0.8, -1.2, 2.5, 0.3, 1.7, -0.6]))
    with torch.no_grad():
        float_mean = layer.layer(x).double().mean(dim=(0, 2, 3))
        uncorrected_mean = layer(x).double().mean(dim=(0, 2, 3))
        means = InputMeans(layer)
        layer(x)
        means.remove()
        correct_bias(layer, means.mean())
        corrected_mean = layer(x).double().mean(dim=(0, 2, 3))
    tolerance = 1e-5 * float(float_mean.abs().max())
    assert float((uncorrected_mean - float_mean).abs().max()) > 100 * tolerance
    torch.testing.assert_close(corrected_mean, float_mean, rtol=0, atol=tolerance)


def test_calibrate_corrects_every_layer_with_its_measured_input_mean():
    """PTQ wiring: calibrate(bias_correction=True) ends with biases that differ from those of
    bias_correction=False by exactly the shift of each layer's weight error; the first
    layer's input is the calibration data itself, so its E[x] is known here."""
    x = fashion_mnist_batch(16)
    recipe = get_recipe("sym-per-channel-4", observer="minmax")
    graphs = {}
    for on in (True, False):
        qgm = prepare_ptq(build("mobilenet_v1"), x[:2], recipe)
        calibrate(qgm, [x[:8], x[8:]], progress=False, bias_correction=on)
        graphs[on] = dict(quant_layers(qgm))
    name, first = next(iter(graphs[True].items()))
    w, wq, groups = weights_and_groups(first)
    shift = reference_shift(w, wq, np.array([x.double().mean().item()]), groups)
    corrected = first.layer.bias.detach().double().numpy()
    plain = graphs[False][name].layer.bias.detach().double().numpy()
    np.testing.assert_allclose(corrected, plain - shift, rtol=0, atol=1e-6)
    for name, layer in graphs[True].items():
        assert not torch.equal(layer.layer.bias, graphs[False][name].layer.bias), name
