"""Cross-layer equalization: exact for identity/relu pairs, equal ranges sqrt(r1·r2) per pair,
grouped/depthwise convs, BN kept inside (QAT form), relu6 policy, skipped pairs, idempotence.

Ranges are recomputed here in float64 from the weights (loops over channels and groups), not
with the pass's own helpers."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from intq.graph import (
    FusedConv2d,
    FusedLinear,
    capture,
    cross_layer_equalize,
    fuse,
    normalize,
    prepare_float_graph,
    relu6_preactivation_peaks,
)

from .helpers import assert_same_function, relative_error, small_inputs
from .nets import randomize_batchnorms

TOL = 1e-4  # the pass's default tolerance on max |s_i - 1|


def _spread(conv: nn.Conv2d, seed: int) -> None:
    """Give the output channels of ``conv`` ranges over three orders of magnitude."""
    g = torch.Generator().manual_seed(seed)
    factors = 10.0 ** (3 * torch.rand(conv.out_channels, generator=g) - 1.5)
    conv.weight.data *= factors.reshape(-1, 1, 1, 1)


class Chain(nn.Module):
    """conv -relu-> depthwise -relu-> conv -identity-> grouped conv (groups 2) -relu6-> conv,
    pool, linear -relu-> linear. BN after every conv."""

    def __init__(self, last_act: type[nn.Module] = nn.ReLU6) -> None:
        super().__init__()

        def block(cin, cout, groups=1, act=nn.ReLU):
            layers = [nn.Conv2d(cin, cout, 3, padding=1, groups=groups, bias=False),
                      nn.BatchNorm2d(cout)]
            return nn.Sequential(*layers, *([act()] if act else []))

        self.features = nn.Sequential(
            block(1, 6), block(6, 6, groups=6), block(6, 8, act=None),
            block(8, 6, groups=2, act=last_act), block(6, 4),
        )
        self.fc1, self.fc2 = nn.Linear(4, 12), nn.Linear(12, 10)
        for i, m in enumerate(self.features):
            _spread(m[0], seed=i)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


def _model(last_act: type[nn.Module] = nn.ReLU6) -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorms(Chain(last_act)).eval()


def _layer(module: nn.Module) -> nn.Module:
    return module.conv if isinstance(module, FusedConv2d) else module.linear


def _folded(module: nn.Module) -> torch.Tensor:
    """The folded weights in float64: W, or γW/σ with the BN still inside."""
    w = _layer(module).weight.detach().double()
    if module.bn is None:
        return w
    bn = module.bn
    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    return w * scale.reshape(-1, *([1] * (w.dim() - 1)))


def _out_ranges(module: nn.Module) -> list[float]:
    w = _folded(module)
    return [float(w[i].abs().max()) for i in range(w.shape[0])]


def _in_ranges(module: nn.Module) -> list[float]:
    """max |W[o, i mod in_per_group]| over the outputs o of input channel i's group."""
    w = _folded(module)
    groups = _layer(module).groups if isinstance(module, FusedConv2d) else 1
    in_per_group, out_per_group = w.shape[1], w.shape[0] // groups
    out = []
    for i in range(in_per_group * groups):
        g = i // in_per_group
        rows = w[g * out_per_group:(g + 1) * out_per_group, i % in_per_group]
        out.append(float(rows.abs().max()))
    return out


def _pair_modules(gm, pair):
    return gm.get_submodule(pair.first), gm.get_submodule(pair.second)


def test_relu_and_identity_pairs_keep_the_function_exactly():
    model = _model(last_act=nn.ReLU)
    gm, report = cross_layer_equalize(prepare_float_graph(model, small_inputs()[0]))
    assert report.converged and len(report.pairs) == 5  # 4 conv pairs + linear pair
    assert not any(p.clamped_channels for p in report.pairs)
    assert_same_function(gm, model, small_inputs())


def test_each_pair_ends_with_equal_ranges_and_the_ratios_shrink():
    model = _model(last_act=nn.ReLU)
    before = prepare_float_graph(model, small_inputs()[0])
    gm, report = cross_layer_equalize(before)
    for pair in report.pairs:
        first, second = _pair_modules(gm, pair)
        r1, r2 = _out_ranges(first), _in_ranges(second)
        for a, b in zip(r1, r2, strict=True):
            assert a == pytest.approx(b, rel=3 * TOL), pair
    old = _out_ranges(before.get_submodule("features.1.0"))
    new = _out_ranges(gm.get_submodule("features.1.0"))
    assert max(old) / min(old) > 100 and max(new) / min(new) < max(old) / min(old) / 10


def test_a_single_pair_gets_sqrt_r1_r2_in_one_sweep():
    model = nn.Sequential(nn.Conv2d(2, 5, 3), nn.ReLU(), nn.Conv2d(5, 3, 1)).eval()
    _spread(model[0], seed=3)
    gm0 = prepare_float_graph(model, small_inputs()[0][:, :1].repeat(1, 2, 1, 1))
    first0, second0 = gm0.get_submodule("0"), gm0.get_submodule("2")
    want = [math.sqrt(a * b) for a, b in zip(_out_ranges(first0), _in_ranges(second0),
                                             strict=True)]
    gm, report = cross_layer_equalize(gm0, max_sweeps=1)
    assert report.sweeps == 1 and [(p.first, p.second) for p in report.pairs] == [("0", "2")]
    first, second = gm.get_submodule("0"), gm.get_submodule("2")
    assert _out_ranges(first) == pytest.approx(want, rel=1e-6)
    assert _in_ranges(second) == pytest.approx(want, rel=1e-6)
    bias_ratio = _layer(first).bias.detach().double() / _layer(first0).bias.detach().double()
    scale = torch.tensor(want, dtype=torch.float64) / torch.tensor(_out_ranges(first0))
    torch.testing.assert_close(bias_ratio, scale, rtol=1e-6, atol=0)  # b1[i] / s_i


def test_depthwise_and_grouped_second_layers_scale_only_their_group():
    model = _model(last_act=nn.ReLU)
    gm, report = cross_layer_equalize(prepare_float_graph(model, small_inputs()[0]))
    seconds = {p.second: _layer(gm.get_submodule(p.second)).groups for p in report.pairs
               if p.second.startswith("features")}
    assert seconds["features.1.0"] == 6 and seconds["features.3.0"] == 2
    assert_same_function(gm, model, small_inputs())


def _bn_output_peaks(model: nn.Module, block: int, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Per-channel max of features[block]'s BN output (the relu6 input) over ``inputs``."""
    seen = []
    hook = model.features[block][1].register_forward_hook(
        lambda _m, _i, y: seen.append(y.detach().amax(dim=(0, 2, 3))))
    with torch.no_grad():
        for x in inputs:
            model(x)
    hook.remove()
    return torch.stack(seen).amax(0)


def test_relu6_pairs_without_peaks_are_skipped():
    model = _model(last_act=nn.ReLU6)
    exact, report = cross_layer_equalize(prepare_float_graph(model, small_inputs()[0]))
    assert "features.3.0" not in [p.first for p in report.pairs]
    assert exact.get_submodule("features.3.0").activation == "relu6"
    assert_same_function(exact, model, small_inputs())


@pytest.mark.parametrize("saturate", [False, True])
def test_relu6_pairs_keep_relu6_and_the_function_on_the_measured_data(saturate):
    model = _model(last_act=nn.ReLU6)
    if saturate:  # drive two channels of the relu6 layer past the clamp
        model.features[3][1].bias.data[:2] += 20.0
    graph = prepare_float_graph(model, small_inputs()[0])
    peaks = relu6_preactivation_peaks(graph, small_inputs())
    want = _bn_output_peaks(model, 3, small_inputs())
    torch.testing.assert_close(peaks["features.3.0"].float(), want, rtol=1e-5, atol=1e-5)

    gm, report = cross_layer_equalize(graph, relu6_peaks=peaks)
    pair = next(p for p in report.pairs if p.first == "features.3.0")
    assert pair.activation == "relu6" and gm.get_submodule("features.3.0").activation == "relu6"
    assert pair.clamped_channels == int((want >= 6).sum()) == (2 if saturate else 0)
    assert_same_function(gm, model, small_inputs())
    scaled = _bn_output_peaks_of_graph(gm, small_inputs())
    free = want < 6
    assert float(scaled[free].max()) <= 6.0 + 1e-4  # scaled channels stay under the clamp
    torch.testing.assert_close(scaled[~free], want[~free])  # clamped ones keep S_i = 1


def _bn_output_peaks_of_graph(gm, inputs: list[torch.Tensor]) -> torch.Tensor:
    """Per-channel max of the equalized graph's features.3.0 pre-activation over ``inputs``."""
    conv = gm.get_submodule("features.3.0").conv
    seen = []
    hook = conv.register_forward_hook(lambda _m, _i, y: seen.append(y.detach().amax((0, 2, 3))))
    with torch.no_grad():
        for x in inputs:
            gm(x)
    hook.remove()
    return torch.stack(seen).amax(0)


class Branching(nn.Module):
    """a -> b, and a also read by the add: the pair (a, b) must not be equalized."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.c = nn.Conv2d(4, 4, 1)
        _spread(self.a, seed=5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.a(x))
        return self.c(torch.relu(self.b(a) + a))


def test_a_first_layer_with_another_reader_is_skipped():
    model = Branching().eval()
    graph = prepare_float_graph(model, small_inputs()[0])
    gm, report = cross_layer_equalize(graph)
    assert all(p.first != "a" for p in report.pairs)
    for name in ("a", "b"):
        torch.testing.assert_close(_layer(gm.get_submodule(name)).weight,
                                   _layer(graph.get_submodule(name)).weight, rtol=0, atol=0)
    assert_same_function(gm, model, small_inputs())


def test_with_bn_inside_the_pass_scales_gamma_beta_and_keeps_train_and_eval_outputs():
    model = _model(last_act=nn.ReLU)
    x = small_inputs()[1]
    unfolded = fuse(normalize(capture(model, x)))
    assert unfolded.get_submodule("features.0.0").bn is not None
    gm, report = cross_layer_equalize(unfolded)
    assert len(report.pairs) == 5
    for pair in report.pairs:
        first, second = _pair_modules(gm, pair)
        assert _out_ranges(first) == pytest.approx(_in_ranges(second), rel=3 * TOL)
    before, after = unfolded.get_submodule("features.0.0"), gm.get_submodule("features.0.0")
    torch.testing.assert_close(after.conv.weight, before.conv.weight, rtol=0, atol=0)
    torch.testing.assert_close(after.bn.running_var, before.bn.running_var, rtol=0, atol=0)
    assert_same_function(gm, model, small_inputs())
    reference = copy.deepcopy(model).train()
    gm.train()
    with torch.no_grad():  # batch statistics: the BN output still scales by 1/s_i
        assert relative_error(gm(x), reference(x)) <= 1e-5


def test_a_second_application_changes_almost_nothing():
    graph = prepare_float_graph(_model(), small_inputs()[0])
    once, _ = cross_layer_equalize(graph)
    twice, report = cross_layer_equalize(once)
    assert report.sweeps == 1 and report.last_change <= TOL
    for name, module in once.named_modules():
        if isinstance(module, FusedConv2d | FusedLinear):
            w1, w2 = _layer(module).weight, _layer(twice.get_submodule(name)).weight
            assert relative_error(w2, w1) <= 2 * TOL, name


def test_input_graph_is_not_modified_and_bad_options_are_rejected():
    graph = prepare_float_graph(_model(), small_inputs()[0])
    weight = _layer(graph.get_submodule("features.1.0")).weight.clone()
    cross_layer_equalize(graph)
    torch.testing.assert_close(_layer(graph.get_submodule("features.1.0")).weight, weight,
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="tolerance"):
        cross_layer_equalize(graph, tolerance=0)
