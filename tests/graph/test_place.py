"""The float-output rule of quantizer placement (``intq.graph.place.is_float_output_linear``):
a quantized linear layer without a fused activation whose value reaches the graph output
directly or only through flatten/reshape gets no output quantizer, so the simulation returns
linear(x_q, Q(W), bias on the int32 grid) in float. A linear feeding any other op, a linear
with a fused ReLU, a conv at the output and a layer kept in float keep today's quantizer."""

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.graph.place import (
    ACT_PREFIX,
    activation_quantizers,
    float_output_layers,
    is_float_output_linear,
)
from intq.graph.qmodules import QuantLinear
from intq.ptq import prepare_ptq, quantize
from intq.recipes import get_recipe

from .helpers import fashion_mnist_batch
from .nets import AddedHeads, ConvOutput, ReluHead, ReshapedHead, SharedLogits, build


def prepared(model: nn.Module, recipe=None) -> fx.GraphModule:
    torch.manual_seed(0)
    return prepare_ptq(model.eval(), fashion_mnist_batch(2), recipe or get_recipe())


def node(gm: fx.GraphModule, target: str) -> fx.Node:
    return next(n for n in gm.graph.nodes if n.target == target)


def has_quantizer(gm: fx.GraphModule, target: str) -> bool:
    return any(str(u.target).startswith(f"{ACT_PREFIX}.") for u in node(gm, target).users)


@pytest.mark.parametrize("model,floats,quantized", [
    (build("linear_bn"), ["fc2"], ["fc1", "conv"]),  # fc1 (+BN+ReLU) feeds fc2
    (ReshapedHead(), ["fc"], ["conv"]),
    (ReluHead(), [], ["fc", "conv"]),
    (SharedLogits(), ["fc2"], ["fc", "conv"]),
    (AddedHeads(), [], ["fc", "fc2", "conv"]),
    (ConvOutput(), [], ["conv"]),
], ids=["linear_bn", "reshaped", "relu", "shared", "added", "conv"])
def test_only_a_linear_reaching_the_output_through_reshapes_has_no_quantizer(
        model, floats, quantized):
    gm = prepared(model)
    assert [name for name, _ in float_output_layers(gm)] == floats
    for target in floats:
        assert is_float_output_linear(gm, node(gm, target)) and not has_quantizer(gm, target)
    for target in quantized:
        assert not is_float_output_linear(gm, node(gm, target)), target
        assert has_quantizer(gm, target), target
    owners = {name for name, _ in activation_quantizers(gm)}
    assert not owners & {node(gm, t).name for t in floats}


def test_the_rule_ignores_non_layer_nodes_and_layers_kept_in_float():
    gm = prepared(ReshapedHead(), get_recipe().with_override("fc", keep_float=True))
    assert not list(float_output_layers(gm))
    assert not has_quantizer(gm, "fc")  # a float island read only by the output stays float
    assert not any(is_float_output_linear(gm, n) for n in gm.graph.nodes)


@pytest.mark.parametrize("model", [build("linear_bn"), ReshapedHead(), build("mobilenet_v2")],
                         ids=["linear_bn", "reshaped", "mobilenet_v2"])
def test_the_simulated_output_is_the_float_linear_of_the_quantized_input(model):
    """The graph output is exactly F.linear(x_q, Q(W), b on the int32 grid) of the classifier
    (then reshaped): nothing rounds it onto an output grid."""
    x = fashion_mnist_batch(8)
    qgm = quantize(model, x, progress=False)
    ((name, fc),) = float_output_layers(qgm)
    seen = []
    fc.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        out = qgm(x)
        want = F.linear(seen[0], fc.quantized_weight(), fc.simulated_bias())
    assert isinstance(fc, QuantLinear) and fc.input_quantizer is not None
    assert torch.equal(out.reshape(want.shape), want), name


def test_weight_only_recipes_place_no_activation_quantizer_at_all():
    gm = prepared(build("linear_bn"), get_recipe(weight_only=True))
    assert not list(activation_quantizers(gm))
    assert [name for name, _ in float_output_layers(gm)] == ["fc2"]
