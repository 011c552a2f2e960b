"""QATConvBn2d against independent float64 conv -> BN references (PAPER.md 3)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intq.fakequant import Quantizer, activation_spec, weight_spec
from intq.qat import QATConvBn2d

C_IN, C_OUT = 3, 5


def conv_bn(seed: int = 0, bias: bool = True) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(C_IN, C_OUT, 3, padding=1, bias=bias)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) * 0.4)
        if bias:
            conv.bias.copy_(torch.randn(C_OUT, generator=g) * 0.3)
    bn = nn.BatchNorm2d(C_OUT)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(C_OUT, generator=g) * 0.5)
        bn.running_var.copy_(torch.rand(C_OUT, generator=g) * 2 + 0.3)
        bn.weight.copy_(torch.rand(C_OUT, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(C_OUT, generator=g) * 0.3)
    return conv, bn


def qat_layer(correction: bool = True, fake_quant: bool = True, bits: int = 8,
              activation: str | None = "relu6", seed: int = 0,
              exact: bool = False) -> QATConvBn2d:
    conv, bn = conv_bn(seed)
    wq = Quantizer(weight_spec("sym-per-channel", bits), current_ranges=True,
                   fake_quant=fake_quant)
    return QATConvBn2d(conv, bn, activation, wq, correction=correction,
                       exact_batch_stats=exact).train()


# (correction, exact_batch_stats): corrected one-conv, corrected paper graph, naive
FOLDS = [(True, False), (True, True), (False, False)]


def reference(layer: QATConvBn2d, activation: str | None = "relu6") -> nn.Module:
    conv, bn = copy.deepcopy(layer.conv), copy.deepcopy(layer.bn)
    acts = {"relu6": nn.ReLU6(), "relu": nn.ReLU(), None: nn.Identity()}
    return nn.Sequential(conv, bn, acts[activation]).train(layer.training)


def inputs(seed: int = 1, n: int = 6) -> torch.Tensor:
    return torch.randn(n, C_IN, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def sym_per_channel_fq64(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Independent fake quantization: Δ_c = max|w_c| / (2^(b-1) - 1), round half to even."""
    qmax = 2 ** (bits - 1) - 1
    delta = w.abs().amax(dim=(1, 2, 3), keepdim=True) / qmax
    return torch.round(w / delta).clamp(-qmax, qmax) * delta


def inference_fold64(layer: QATConvBn2d) -> tuple[torch.Tensor, torch.Tensor]:
    bn, conv = layer.bn, layer.conv
    sigma = (bn.running_var.double() + bn.eps).sqrt()
    scale = bn.weight.double() / sigma
    w = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    b = bn.bias.double() + (conv.bias.double() - bn.running_mean.double()) * scale
    return w, b


@pytest.mark.parametrize(("correction", "exact"), FOLDS)
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_float_training_equals_conv_then_batchnorm(correction, exact, activation):
    layer = qat_layer(correction, fake_quant=False, activation=activation, exact=exact)
    ref = reference(layer, activation)
    for seed in (1, 2, 3):  # several steps: the moving statistics must track too
        x = inputs(seed)
        torch.testing.assert_close(layer(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.bn.running_mean, ref[1].running_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(layer.bn.running_var, ref[1].running_var, rtol=1e-6, atol=1e-6)
    assert int(layer.bn.num_batches_tracked) == 3


def test_float_eval_equals_conv_then_batchnorm():
    layer = qat_layer(fake_quant=False).eval()
    ref = reference(layer)
    torch.testing.assert_close(layer(inputs()), ref(inputs()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("correction", "exact"), FOLDS)
def test_gradients_equal_conv_then_batchnorm_when_float(correction, exact):
    layer = qat_layer(correction, fake_quant=False, exact=exact)
    ref = reference(layer)
    x = inputs()
    grad_out = torch.randn(layer(x).shape, generator=torch.Generator().manual_seed(5))
    (layer(x) * grad_out).sum().backward()
    (ref(x) * grad_out).sum().backward()
    pairs = [(layer.conv.weight, ref[0].weight), (layer.bn.weight, ref[1].weight),
             (layer.bn.bias, ref[1].bias)]
    for mine, theirs in pairs:
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-5)
    # training BN subtracts the batch mean: a conv bias before it gets no gradient
    assert layer.conv.bias.grad is None or layer.conv.bias.grad.abs().max() < 1e-5
    torch.testing.assert_close(ref[0].bias.grad, torch.zeros(C_OUT), rtol=0, atol=1e-5)


@pytest.mark.parametrize(("correction", "exact"), FOLDS)
def test_ste_gradients_reach_weights_and_bn_parameters(correction, exact):
    layer = qat_layer(correction, fake_quant=True, bits=4, exact=exact)
    layer(inputs()).square().sum().backward()
    for p in (layer.conv.weight, layer.bn.weight, layer.bn.bias):
        assert p.grad is not None and torch.isfinite(p.grad).all()
        assert p.grad.abs().sum() > 0


@pytest.mark.parametrize("bits", [8, 4])
def test_corrected_training_step_matches_paper_formula(bits):
    layer = qat_layer(fake_quant=True, bits=bits, activation=None, exact=True)
    before = copy.deepcopy(layer.bn)
    x = inputs()
    y = layer(x).double()
    sigma = (before.running_var.double() + before.eps).sqrt()
    raw = F.conv2d(x.double(), layer.conv.weight.double(), None, padding=1)
    mu_b, var_b = raw.mean((0, 2, 3)), raw.var((0, 2, 3), unbiased=False)
    sigma_b = (var_b + before.eps).sqrt()
    gamma, beta = before.weight.double(), before.bias.double()
    w_corrected = sym_per_channel_fq64(layer.conv.weight.double()
                                       * (gamma / sigma).reshape(-1, 1, 1, 1), bits)
    c = (sigma_b / sigma).reshape(1, -1, 1, 1)
    expected = F.conv2d(x.double(), w_corrected, None, padding=1) / c + (
        beta - gamma * mu_b / sigma_b).reshape(1, -1, 1, 1)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [8, 4])
def test_corrected_one_conv_step_takes_statistics_of_the_rescaled_quantized_conv(bits):
    layer = qat_layer(fake_quant=True, bits=bits, activation=None)
    before = copy.deepcopy(layer.bn)
    x = inputs()
    y = layer(x).double()
    sigma = (before.running_var.double() + before.eps).sqrt()
    gamma, beta = before.weight.double(), before.bias.double()
    w_folded = sym_per_channel_fq64(layer.conv.weight.double()
                                    * (gamma / sigma).reshape(-1, 1, 1, 1), bits)
    z = (F.conv2d(x.double(), w_folded, None, padding=1) * (sigma / gamma).reshape(1, -1, 1, 1)
         + layer.conv.bias.double().reshape(1, -1, 1, 1))
    mu_b, var_b = z.mean((0, 2, 3)), z.var((0, 2, 3), unbiased=False)
    sigma_b = (var_b + before.eps).sqrt()
    expected = (gamma / sigma_b).reshape(1, -1, 1, 1) * (z - mu_b.reshape(1, -1, 1, 1)) + (
        beta.reshape(1, -1, 1, 1))
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    n = z.numel() // C_OUT
    torch.testing.assert_close(layer.bn.running_mean.double(), 0.9 * before.running_mean.double()
                               + 0.1 * mu_b, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.bn.running_var.double(), 0.9 * before.running_var.double()
                               + 0.1 * var_b * n / (n - 1), rtol=1e-5, atol=1e-6)


def test_one_conv_step_keeps_a_zero_gamma_channel_at_beta_with_finite_gradients():
    layer = qat_layer(fake_quant=True, bits=8, activation=None)
    with torch.no_grad():
        layer.bn.weight[2] = 0.0
    y = layer(inputs())
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[:, 2], torch.full_like(y[:, 2], float(layer.bn.bias[2].detach())))
    (y * torch.linspace(-1, 1, y.numel()).reshape(y.shape)).sum().backward()
    for grad in (layer.bn.weight.grad, layer.bn.bias.grad, layer.conv.weight.grad):
        assert torch.isfinite(grad).all()  # 1/scale of the dead channel passes no NaN back


def test_naive_training_step_quantizes_batch_folded_weights():
    layer = qat_layer(correction=False, fake_quant=True, bits=4, activation=None)
    x = inputs()
    raw = F.conv2d(x.double(), layer.conv.weight.double(), None, padding=1)
    mu_b, var_b = raw.mean((0, 2, 3)), raw.var((0, 2, 3), unbiased=False)
    sigma_b = (var_b + layer.bn.eps).sqrt()
    gamma, beta = layer.bn.weight.double(), layer.bn.bias.double()
    w = sym_per_channel_fq64(layer.conv.weight.double() * (gamma / sigma_b).reshape(-1, 1, 1, 1),
                             4)
    expected = F.conv2d(x.double(), w, (beta - gamma * mu_b / sigma_b), padding=1)
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("correction", "exact"), FOLDS)
def test_after_bn_freeze_training_computes_the_inference_graph(correction, exact):
    layer = qat_layer(correction, fake_quant=True, bits=4, activation=None, exact=exact)
    layer(inputs(1))  # one step with batch statistics moves the moving averages
    layer.bn_frozen = True
    stats = layer.bn.running_mean.clone(), layer.bn.running_var.clone()
    w, b = inference_fold64(layer)
    x = inputs(2)
    expected = F.conv2d(x.double(), sym_per_channel_fq64(w, 4), b, padding=1)
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.bn.running_mean, stats[0])
    assert torch.equal(layer.bn.running_var, stats[1])
    layer.eval()
    torch.testing.assert_close(layer(x).double(), expected, rtol=1e-5, atol=1e-5)


def test_to_quant_conv_equals_eval_mode_with_int32_bias_grid():
    layer = qat_layer(fake_quant=True, bits=8)
    layer(inputs(1))
    q_in = Quantizer(activation_spec(8))
    x = q_in(inputs(2))
    layer.bind_input_quantizer(q_in)
    layer.eval()
    deployable = layer.to_quant_conv().eval()
    assert deployable.weight_quantizer.frozen and deployable.input_quantizer is q_in
    assert torch.equal(deployable(x), layer(x))
    w, b = inference_fold64(layer)
    torch.testing.assert_close(deployable.layer.weight.double(), w, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(deployable.layer.bias.double(), b, rtol=1e-6, atol=1e-7)


def test_rejects_batchnorm_of_other_width():
    conv, _ = conv_bn()
    with pytest.raises(ValueError, match="BatchNorm2d over the conv's 5 output channels"):
        QATConvBn2d(conv, nn.BatchNorm2d(4), None, Quantizer(weight_spec()))


def test_moving_the_activation_needs_one_and_can_be_undone():
    from intq.fakequant import QuantSpec

    conv, bn = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2)
    weights = Quantizer(QuantSpec(symmetric=True, per_channel=True))
    with pytest.raises(ValueError, match="no activation to move"):
        QATConvBn2d(conv, bn, None, weights).move_activation_into(Quantizer(QuantSpec()))
    layer, output = QATConvBn2d(conv, bn, "relu6", weights).eval(), Quantizer(QuantSpec())
    x = torch.randn(2, 1, 5, 5) * 10
    layer.move_activation_into(output)
    assert output.input_clamp == (0.0, 6.0) and "in the output quantizer" in repr(layer)
    assert (layer(x) > 6).any()
    layer.restore_activation()
    assert output.input_clamp is None and not layer.activation_moved and layer(x).max() <= 6
