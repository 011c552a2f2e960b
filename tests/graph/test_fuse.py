"""fuse: conv/linear/add (+BN) (+ReLU/ReLU6) become single nodes; no quantizer fits inside."""

import pytest
import torch
import torch.nn.functional as F

from intq.graph import (
    FusedAdd,
    FusedConv2d,
    FusedLinear,
    OpKind,
    capture,
    fold_batchnorm,
    fuse,
    graph_summary,
    normalize,
    op_kind,
    prepare_float_graph,
)

from .helpers import assert_same_function, small_inputs
from .nets import SAME_PADDING_WARNING, SUPPORTED, UnfoldableNet, build

pytestmark = pytest.mark.filterwarnings(SAME_PADDING_WARNING)
FUSED = (OpKind.FUSED_CONV, OpKind.FUSED_LINEAR, OpKind.FUSED_ADD)


def prepared(name):
    model = build(name)
    return model, prepare_float_graph(model, small_inputs()[0])


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_fuse_keeps_the_function(name):
    model, gm = prepared(name)
    assert_same_function(gm, model, small_inputs())


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_no_relu_directly_after_a_fused_node_it_could_join(name):
    _, gm = prepared(name)
    kinds = {n: op_kind(gm, n) for n in gm.graph.nodes}
    assert OpKind.CONV not in kinds.values() and OpKind.LINEAR not in kinds.values()
    assert OpKind.ADD not in kinds.values()
    for node, kind in kinds.items():
        if kind in (OpKind.RELU, OpKind.RELU6):
            source = node.args[0]
            assert not (kinds[source] in FUSED and len(source.users) == 1), node.name


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_fuse_is_idempotent(name):
    _, gm = prepared(name)
    again = fuse(gm)
    assert again.code == gm.code
    assert [str(m) for m in again.modules()] == [str(m) for m in gm.modules()]


def test_resnet_fusions():
    _, gm = prepared("resnet")
    adds = [m for m in gm.modules() if isinstance(m, FusedAdd)]
    assert [m.activation for m in adds] == ["relu", "relu"]  # out += identity; relu(out)
    block = gm.get_submodule("layer2")
    assert block.conv1.activation == "relu" and block.conv2.activation is None
    assert block.downsample.get_submodule("0").activation is None
    assert isinstance(gm.get_submodule("fc"), FusedLinear)
    assert graph_summary(gm) == {
        "flatten": 1, "fused_add": 2, "fused_add+relu": 2, "fused_conv": 6,
        "fused_conv+relu": 3, "fused_linear": 1, "global_avg_pool": 1, "input": 1,
        "max_pool": 1, "output": 1,
    }


def test_fused_conv_keeps_the_users_name_and_holds_the_conv():
    _, gm = prepared("mobilenet_v2")
    fused = gm.get_submodule("blocks.1.dw.0")
    assert isinstance(fused, FusedConv2d) and fused.activation == "relu6" and fused.bn is None
    assert fused.conv.groups == fused.conv.in_channels == 24
    assert "blocks.1.dw.0.conv.weight" in gm.state_dict()


def test_concat_is_preserved_between_fused_branches():
    _, gm = prepared("inception")
    (cat,) = [n for n in gm.graph.nodes if n.target is torch.cat]
    assert cat.args[1] == 1
    assert [op_kind(gm, a) for a in cat.args[0]] == [OpKind.FUSED_CONV] * 4
    assert [gm.get_submodule(a.target).activation for a in cat.args[0]] == [
        "relu", "relu", "relu", None,
    ]


def test_relu_with_another_reader_of_its_input_is_not_fused():
    model = UnfoldableNet().eval()
    gm = prepare_float_graph(model, small_inputs()[0])
    (relu,) = [n for n in gm.graph.nodes if n.target is F.relu]
    source = relu.args[0]
    assert source.target == "conv3" and gm.get_submodule("conv3").activation is None
    assert len(source.users) == 2
    assert gm.get_submodule("conv1").activation == "relu"  # relu before bn_after_relu fuses
    assert_same_function(gm, model, small_inputs())


def test_fuse_without_fold_moves_bn_and_relu_into_the_fused_conv():
    model = build("mobilenet_v1")
    gm = fuse(normalize(capture(model, small_inputs()[0])))
    fused = gm.get_submodule("features.0")
    assert fused.bn is not None and fused.activation == "relu6"
    assert "batchnorm" not in graph_summary(gm)
    assert_same_function(gm, model, small_inputs())


def test_linear_bn_relu_fuses():
    _, gm = prepared("linear_bn")
    assert gm.get_submodule("fc1").activation == "relu"
    unfolded = fuse(normalize(capture(build("linear_bn"), small_inputs()[0])))
    assert unfolded.get_submodule("fc1").bn is not None


def test_fuse_does_not_modify_its_input():
    gm = fold_batchnorm(normalize(capture(build("resnet"), small_inputs()[0])))
    code = gm.code
    fuse(gm)
    assert gm.code == code
    assert not any(isinstance(m, FusedConv2d) for m in gm.modules())
