"""capture: fx trace of an unmodified model, leaves kept in float, errors that say what to do."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.errors import IntqError
from intq.graph import (
    OpKind,
    capture,
    fold_batchnorm,
    fuse,
    normalize,
    op_kind,
    prepare_float_graph,
    unsupported_nodes,
)
from intq.graph._fx import LEAF_MODULES
from intq.graph.capture import AUTO_LEAVES

from .helpers import assert_same_function, small_inputs
from .nets import (
    SAME_PADDING_WARNING,
    SUPPORTED,
    CountingNet,
    Gate,
    GatedNet,
    RootBranchNet,
    build,
)

pytestmark = pytest.mark.filterwarnings(SAME_PADDING_WARNING)


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_capture_reproduces_each_model(name):
    model = build(name)
    gm = capture(model, small_inputs()[0])
    assert isinstance(gm, fx.GraphModule)
    assert_same_function(gm, model, small_inputs())


def test_functional_conv_model_captures_conv_with_parameter_weights():
    gm = capture(build("functional"), small_inputs()[0])
    convs = [n for n in gm.graph.nodes if n.target is F.conv2d]
    assert len(convs) == 4
    assert all(n.args[1].op == "get_attr" for n in convs)


def test_capture_does_not_modify_the_model():
    model = build("resnet").train()
    before = copy.deepcopy(model.state_dict())
    modules = list(model.modules())
    prepare_float_graph(model, small_inputs()[0])
    assert model.training
    assert all(m.training for m in model.modules())
    assert list(model.modules()) == modules
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_capture_without_example_input_has_no_shapes():
    gm = capture(build("mobilenet_v1"))
    assert all("tensor_meta" not in n.meta for n in gm.graph.nodes)
    assert_same_function(gm, build("mobilenet_v1"), small_inputs())


def test_untraceable_module_becomes_a_leaf_that_names_its_line():
    model = GatedNet().eval()
    gm = capture(model, small_inputs()[0])
    [(name, reason)] = gm.meta[AUTO_LEAVES].items()
    assert name == "gate" and reason.startswith("Gate uses a traced tensor in Python control")
    assert "nets.py" in reason and "if x.mean() > 0:" in reason and "\n" not in reason
    assert gm.meta[LEAF_MODULES] == ("gate",)
    assert_same_function(gm, model, small_inputs())


def test_untraceable_root_forward_error_suggests_a_leaf_submodule():
    with pytest.raises(IntqError, match=r"RootBranchNet\.forward at nets\.py:\d+ .*leaf_modules"):
        capture(RootBranchNet())


def test_unknown_leaf_name_is_rejected_with_known_names():
    with pytest.raises(IntqError, match=r"no submodule named 'gat'.*'conv'"):
        capture(GatedNet(), leaf_modules=["gat"])


@pytest.mark.parametrize("leaf", ["gate", Gate])
def test_leaf_module_runs_in_float_end_to_end(leaf):
    model = GatedNet().eval()
    gm = prepare_float_graph(model, small_inputs()[0], leaf_modules=[leaf])
    gates = [n for n in gm.graph.nodes if n.op == "call_module" and n.target == "gate"]
    assert len(gates) == 1 and op_kind(gm, gates[0]) == OpKind.LEAF
    assert isinstance(gm.get_submodule("gate"), Gate)
    assert unsupported_nodes(gm) == []
    assert_same_function(gm, model, small_inputs())
    x = small_inputs()[1]
    branches = {bool(model.bn(model.conv(s)).mean() > 0) for s in (x, -x)}
    assert branches == {True, False}
    assert_same_function(gm, model, [x, -x])
    for run in (normalize, fold_batchnorm, fuse):
        assert run(gm).code == gm.code


def test_leaf_module_keeps_a_torch_nn_layer_out_of_the_passes():
    model = build("mobilenet_v1")
    gm = prepare_float_graph(model, small_inputs()[0], leaf_modules=["features.0"])
    leaf = gm.get_submodule("features.0")
    assert type(leaf) is nn.Conv2d
    assert [n.target for n in gm.graph.nodes if op_kind(gm, n) == OpKind.LEAF] == ["features.0"]
    assert_same_function(gm, model, small_inputs())


def test_example_input_must_be_tensors():
    with pytest.raises(ValueError, match="example_input"):
        capture(GatedNet(), example_input=[1, 2])


def test_graph_that_does_not_reproduce_the_model_is_rejected():
    with pytest.raises(IntqError, match=r"traced graph of CountingNet does not reproduce"):
        capture(CountingNet(), small_inputs()[0])
