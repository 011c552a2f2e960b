"""fold_batchnorm: W_inf = γW/σ, b_inf = β + γ(b - μ)/σ, exact to float32 rounding."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intq.graph import capture, fold_batchnorm, fuse, graph_summary, normalize, unsupported_nodes

from .helpers import assert_same_function, small_inputs
from .nets import SAME_PADDING_WARNING, SUPPORTED, SharedConvNet, UnfoldableNet, build
from .nets import randomize_batchnorms as randomize

pytestmark = pytest.mark.filterwarnings(SAME_PADDING_WARNING)


def reference_fold(weight, bias, bn):
    """The fold in float64, written from the formula, channel by channel."""
    w, out_b = weight.double().clone(), torch.zeros(weight.shape[0], dtype=torch.float64)
    for c in range(weight.shape[0]):
        sigma = (bn.running_var[c].double() + bn.eps) ** 0.5
        gamma, beta, mu = bn.weight[c].double(), bn.bias[c].double(), bn.running_mean[c].double()
        b = bias[c].double() if bias is not None else 0.0
        w[c] = gamma * weight[c].double() / sigma
        out_b[c] = beta + gamma * (b - mu) / sigma
    return w, out_b


def folded(name_or_model):
    model = build(name_or_model) if isinstance(name_or_model, str) else name_or_model.eval()
    return model, fold_batchnorm(normalize(capture(model, small_inputs()[0])))


class ConvBN(nn.Module):
    def __init__(self, bias, groups):
        super().__init__()
        out_channels = 6 if groups == 1 else 4
        self.conv = nn.Conv2d(4, out_channels, 3, padding=1, bias=bias, groups=groups)
        self.bn = nn.BatchNorm2d(out_channels, eps=1e-3)

    def forward(self, x):
        return self.bn(self.conv(x))


@pytest.mark.parametrize(("bias", "groups"), [(False, 1), (True, 1), (False, 4)])
def test_folded_conv_parameters_match_the_formula(bias, groups):
    model = randomize(ConvBN(bias, groups), seed=3).eval()
    x = torch.randn(2, 4, 8, 8)
    gm = fold_batchnorm(normalize(capture(model, x)))
    assert "batchnorm" not in graph_summary(gm)
    conv = gm.get_submodule("conv")
    want_w, want_b = reference_fold(model.conv.weight, model.conv.bias, model.bn)
    assert torch.allclose(conv.weight.double(), want_w, rtol=1e-6, atol=0)
    assert torch.allclose(conv.bias.double(), want_b, rtol=1e-6, atol=1e-7)
    assert_same_function(gm, model, [x, torch.randn(3, 4, 8, 8) * 10])


def test_linear_batchnorm1d_folds():
    model, gm = folded("linear_bn")
    want_w, want_b = reference_fold(model.fc1.weight, model.fc1.bias, model.bn)
    assert torch.allclose(gm.get_submodule("fc1").weight.double(), want_w, rtol=1e-6)
    assert torch.allclose(gm.get_submodule("fc1").bias.double(), want_b, rtol=1e-6, atol=1e-7)
    assert_same_function(gm, model, small_inputs())


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_every_bn_folds_and_the_function_is_kept(name):
    model, gm = folded(name)
    assert "batchnorm" not in graph_summary(gm)
    assert unsupported_nodes(gm) == []
    assert_same_function(gm, model, small_inputs())


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_fold_is_idempotent(name):
    _, gm = folded(name)
    again = fold_batchnorm(gm)
    assert again.code == gm.code
    assert all(torch.equal(again.state_dict()[k], v) for k, v in gm.state_dict().items())


def test_functional_conv_folds_into_the_module_made_from_it():
    model, gm = folded("functional")
    want_w, want_b = reference_fold(model.w1, model.b1, model.bn1)
    assert torch.allclose(gm.get_submodule("w1_conv").weight.double(), want_w, rtol=1e-6)
    assert torch.allclose(gm.get_submodule("w1_conv").bias.double(), want_b, rtol=1e-6)


def test_shared_conv_gets_one_fold_per_call():
    model, gm = folded(randomize(SharedConvNet(), seed=5))
    a = gm.get_submodule("conv").weight.double()
    b = gm.get_submodule("conv_1").weight.double()
    assert torch.allclose(a, reference_fold(model.conv.weight, None, model.bn_a)[0], rtol=1e-6)
    assert torch.allclose(b, reference_fold(model.conv.weight, None, model.bn_b)[0], rtol=1e-6)
    assert_same_function(gm, model, small_inputs())


def test_bn_without_a_foldable_conv_before_it_becomes_a_depthwise_conv():
    model, gm = folded(randomize(UnfoldableNet(), seed=2))
    assert "batchnorm" not in graph_summary(gm)
    assert unsupported_nodes(gm) == []
    for name in ("bn_after_relu", "bn_shared_input"):
        conv, bn = gm.get_submodule(name), getattr(model, name)
        assert type(conv) is torch.nn.Conv2d and conv.groups == conv.in_channels == 4
        sigma = torch.sqrt(bn.running_var.double() + bn.eps)
        gamma = bn.weight.double()
        want_b = bn.bias.double() - bn.running_mean.double() * gamma / sigma
        assert torch.allclose(conv.weight.double().flatten(), gamma / sigma, rtol=1e-6)
        assert torch.allclose(conv.bias.double(), want_b, rtol=1e-6, atol=1e-7)
    assert_same_function(gm, model, small_inputs())


def test_fold_after_fuse_folds_the_bn_inside_fused_convs():
    model = build("mobilenet_v2")
    normal = normalize(capture(model, small_inputs()[0]))
    fused_first = fuse(normal)
    assert all(m.bn is not None for m in fused_first.modules() if hasattr(m, "conv"))
    assert_same_function(fused_first, model, small_inputs())
    both = fold_batchnorm(fused_first)
    assert all(m.bn is None for m in both.modules() if hasattr(m, "conv"))
    assert both.code == fuse(fold_batchnorm(normal)).code
    assert_same_function(both, model, small_inputs())


def test_fold_does_not_modify_its_input():
    gm = normalize(capture(build("resnet"), small_inputs()[0]))
    weight = gm.get_submodule("conv1").weight.clone()
    fold_batchnorm(gm)
    assert torch.equal(gm.get_submodule("conv1").weight, weight)
    assert graph_summary(gm)["batchnorm"] == 6


def test_bn_in_training_statistics_mode_is_not_folded():
    class NoStats(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.bn = nn.BatchNorm2d(4, track_running_stats=False)

        def forward(self, x):
            return F.relu(self.bn(self.conv(x)))

    gm = fold_batchnorm(normalize(capture(NoStats(), small_inputs()[0])))
    assert graph_summary(gm)["batchnorm"] == 1
