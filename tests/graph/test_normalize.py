"""normalize: one canonical node per op, same float function, idempotent."""

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intq.graph import OpKind, capture, graph_summary, normalize, op_kind, unsupported_nodes

from .helpers import assert_same_function, call_targets, small_inputs
from .nets import SAME_PADDING_WARNING, SUPPORTED, InplaceNet, SwishNet, build

pytestmark = pytest.mark.filterwarnings(SAME_PADDING_WARNING)

CANONICAL_CALLS = {
    nn.Conv2d, nn.Linear, nn.BatchNorm2d, nn.BatchNorm1d, F.relu, F.relu6, operator.add,
    torch.cat, F.pad, F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, torch.flatten,
}


def normalized(name):
    model = build(name)
    return model, normalize(capture(model, small_inputs()[0]))


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_normalize_keeps_the_function_and_uses_only_canonical_calls(name):
    model, gm = normalized(name)
    assert_same_function(gm, model, small_inputs())
    assert set(call_targets(gm)) <= CANONICAL_CALLS
    assert not [n for n in gm.graph.nodes if n.op == "get_attr"]
    assert all(op_kind(gm, n) != OpKind.UNSUPPORTED for n in gm.graph.nodes)


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_normalize_is_idempotent(name):
    _, gm = normalized(name)
    again = normalize(gm)
    assert again.code == gm.code
    assert again.state_dict().keys() == gm.state_dict().keys()
    assert all(torch.equal(again.state_dict()[k], v) for k, v in gm.state_dict().items())


def test_normalize_does_not_modify_its_input():
    gm = capture(build("functional"), small_inputs()[0])
    code = gm.code
    normalize(gm)
    assert gm.code == code


def test_functional_forms_of_the_functional_net():
    model, gm = normalized("functional")
    assert graph_summary(gm) == {
        "add": 3, "avg_pool": 1, "batchnorm": 3, "cat": 1, "conv": 6, "flatten": 1,
        "global_avg_pool": 1, "input": 1, "linear": 1, "max_pool": 1, "output": 1, "pad": 2,
        "relu": 2, "relu6": 3,
    }
    # functional convs are modules named after their weights, with the parameter objects
    assert isinstance(gm.get_submodule("w1_conv"), nn.Conv2d)
    assert gm.get_submodule("w2_conv").groups == 2
    assert gm.get_submodule("w3_conv").groups == 8
    assert torch.equal(gm.get_submodule("w1_conv").weight, model.w1)
    assert torch.equal(gm.get_submodule("w5_linear").weight, model.w5)


def test_symmetric_pad_is_merged_into_the_conv_and_uneven_pads_stay():
    _, gm = normalized("functional")
    assert gm.get_submodule("w1_conv").padding == (1, 1)  # F.pad(x, (1, 1, 1, 1)) merged
    assert gm.get_submodule("w2_conv").padding == (0, 0)  # ZeroPad2d((0, 1, 0, 1)) kept
    assert gm.get_submodule("same").padding == (1, 1)  # padding="same", 3x3
    assert gm.get_submodule("same_even").padding == (0, 0)  # "same", 2x2 -> explicit pad
    pads = [n.args[1] for n in gm.graph.nodes if n.target is F.pad]
    assert pads == [(0, 1, 0, 1), (0, 1, 0, 1)]


def test_clamp_spellings_become_relu_and_relu6():
    class Clamps(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu6, self.relu = nn.ReLU6(), nn.ReLU()

        def forward(self, x):
            return (
                F.hardtanh(x, 0.0, 6.0) + x.clamp(0, 6) + torch.clip(x, min=0.0, max=6)
                + self.relu6(x) + x.clamp(min=0) + torch.relu(x) + x.relu() + self.relu(x)
                + x.clamp_min(0) + F.hardtanh(x, -1.0, 1.0) + x.clamp(max=2)
            )

    x = torch.randn(2, 3, 4, 4) * 8
    gm = normalize(capture(Clamps(), x))
    targets = [n.target for n in gm.graph.nodes if n.op == "call_function"]
    assert targets.count(F.relu6) == 4 and targets.count(F.relu) == 5
    clamps = [n for n in gm.graph.nodes if n.target is torch.clamp]
    assert [n.kwargs for n in clamps] == [{"min": -1.0, "max": 1.0}, {"min": None, "max": 2}]
    assert [op_kind(gm, n) for n in clamps] == [OpKind.LOOKUP, OpKind.LOOKUP]
    assert unsupported_nodes(gm) == []
    assert_same_function(gm, Clamps(), [x])


def test_add_and_cat_spellings():
    class Adds(nn.Module):
        def forward(self, x, y):
            a = torch.add(x, y)
            b = a.add(x)
            b += y
            c = operator.add(b, torch.add(y, 1.0))
            return torch.concat((c, torch.add(x, y, alpha=2)), dim=-3)

    x, y = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    gm = normalize(capture(Adds(), (x, y)))
    kinds = [op_kind(gm, n) for n in gm.graph.nodes if n.op == "call_function"]
    assert kinds.count(OpKind.ADD) == 4 and kinds.count(OpKind.CAT) == 1
    cat = next(n for n in gm.graph.nodes if n.target is torch.cat)
    assert cat.args[1] == 1
    shifted = [n for n in gm.graph.nodes if op_kind(gm, n) == OpKind.LOOKUP]
    assert [(n.target, n.args[1:]) for n in shifted] == [(operator.add, (1.0,))]
    odd = [n for n in gm.graph.nodes if op_kind(gm, n) == OpKind.UNSUPPORTED]
    assert [(n.args[1:], n.kwargs) for n in odd] == [((y_node(gm),), {"alpha": 2})]
    assert unsupported_nodes(gm) == [f"{odd[0].name}: torch.add"]
    with torch.no_grad():
        assert torch.equal(gm(x, y), Adds()(x, y))


def y_node(gm):
    return [n for n in gm.graph.nodes if n.op == "placeholder"][1]


def test_flatten_spellings_become_flatten_and_sizes_disappear():
    class Flattens(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()

        def forward(self, x):
            p = F.adaptive_avg_pool2d(x, 1)
            n = x.size(0)
            return torch.stack([
                p.view(n, -1), p.reshape(p.shape[0], -1), torch.flatten(p, 1), p.flatten(1),
                self.flatten(p), p.squeeze(-1).squeeze(-1), p.view(-1, x.size(1)),
                x.mean((2, 3)), torch.mean(x, dim=[-1, -2]), F.avg_pool2d(x, 4).flatten(1),
            ])

    x = torch.randn(2, 3, 4, 4)
    gm = normalize(capture(Flattens(), x))
    assert graph_summary(gm)["flatten"] == 10
    assert graph_summary(gm)["global_avg_pool"] == 4
    assert "shape" not in graph_summary(gm)
    assert [n.target for n in gm.graph.nodes if n.op == "call_method"] == []
    for batch in (x, torch.randn(5, 3, 4, 4)):  # the batch dim stays dynamic
        assert_same_function(gm, Flattens(), [batch])


def test_other_reshapes_keep_the_batch_dynamic():
    class Reshapes(nn.Module):
        def forward(self, x):
            return x.view(x.size(0), x.size(1), -1).unsqueeze(-1) + 1

    x = torch.randn(2, 3, 4, 4)
    gm = normalize(capture(Reshapes(), x))
    reshapes = [n.args[1] for n in gm.graph.nodes if n.target is torch.reshape]
    assert reshapes == [(-1, 3, 16), (-1, 3, 16, 1)]
    with torch.no_grad():
        assert torch.equal(gm(torch.ones(4, 3, 4, 4)), Reshapes()(torch.ones(4, 3, 4, 4)))


def test_pool_forms_are_spelled_out():
    class Pools(nn.Module):
        def __init__(self):
            super().__init__()
            self.max = nn.MaxPool2d(2)
            self.avg = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
            self.adaptive = nn.AdaptiveAvgPool2d((1, None))

        def forward(self, x):
            a = self.max(x) + F.max_pool2d(x, (2, 2), 2)
            return a, self.avg(x), F.adaptive_avg_pool2d(x, (2, 4)), self.adaptive(x)

    x = torch.randn(2, 3, 8, 8)
    gm = normalize(capture(Pools(), x))
    maxes = [n.kwargs for n in gm.graph.nodes if n.target is F.max_pool2d]
    window = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1)}
    assert maxes == [{**window, "ceil_mode": False}] * 2
    avgs = [n.kwargs["kernel_size"] + n.kwargs["stride"] for n in gm.graph.nodes
            if n.target is F.avg_pool2d]
    assert avgs == [(3, 3, 2, 2), (4, 2, 4, 2), (8, 1, 8, 1)]  # adaptive sizes dividing evenly
    with torch.no_grad():
        for got, want in zip(gm(x), Pools()(x), strict=True):
            assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("size", "integer"), [(8, True), (7, False)])
def test_ceil_mode_and_excluded_padding_matter_only_when_a_window_is_partial(size, integer):
    """timm's ResNet-D shortcut pool, AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False):
    on an even size every window is whole (an integer average pool); on an odd size the last
    window is partial and divides by its own count (float)."""
    pool = nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)
    x = torch.randn(2, 3, size, size)
    gm = normalize(capture(pool, x))
    node = next(n for n in gm.graph.nodes if n.target is F.avg_pool2d)
    assert (op_kind(gm, node) == OpKind.AVG_POOL) is integer
    assert node.kwargs["ceil_mode"] is not integer
    with torch.no_grad():
        assert torch.equal(gm(x), pool(x))


def test_dropout_and_identity_are_removed():
    model = build("mobilenet_v1")
    gm = normalize(capture(model, small_inputs()[0]))
    assert not any(isinstance(m, nn.Dropout | nn.Identity) for m in gm.modules())
    assert F.dropout not in call_targets(gm)


def test_inplace_ops_keep_their_meaning():
    model = InplaceNet().eval()
    gm = normalize(capture(model, small_inputs()[0]))
    conv2_calls = [n for n in gm.graph.nodes if n.op == "call_module" and "conv2" in n.target]
    assert [n.args[0].target for n in conv2_calls] == ["conv", F.relu]  # before / after relu_
    assert_same_function(gm, model, small_inputs())


def test_unsupported_nodes_name_node_and_target():
    gm = normalize(capture(SwishNet().eval(), small_inputs()[0]))
    assert unsupported_nodes(gm) == ["softmax: torch.softmax"]
    kinds = {n.name: op_kind(gm, n) for n in gm.graph.nodes}
    assert kinds["sigmoid"] == OpKind.LOOKUP and kinds["mul"] == OpKind.MUL


def test_normalize_without_example_input_uses_spelled_out_patterns():
    model = build("inception")
    gm = normalize(capture(model))
    assert graph_summary(gm)["flatten"] == 1  # x.view(x.size(0), -1)
    bns = unsupported_nodes(gm)  # BN is folded later; nothing else lacks an integer form
    assert len(bns) == 5 and all("BatchNorm2d module" in s for s in bns)
    assert_same_function(gm, model, small_inputs())


def test_shape_arithmetic_without_example_input_is_shape_kind():
    class Dynamic(nn.Module):
        def forward(self, x):
            return F.relu(x.view(x.size(0), x.size(1) * x.size(2) * x.size(3)))

    gm = normalize(capture(Dynamic()))
    kinds = [op_kind(gm, n) for n in gm.graph.nodes]
    assert kinds.count(OpKind.SHAPE) == 6 and OpKind.RESHAPE in kinds
    assert unsupported_nodes(gm) == []
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(gm(x), Dynamic()(x))
