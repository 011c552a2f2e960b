"""Quantizer placement (PAPER.md 3-4): one weight quantizer per conv/linear on the folded
weights, one activation quantizer per tensor that is new in integer inference, none inside a
fusion, shared ones across concat and lossless ops; BN folding keeps the float function."""

import warnings

import pytest
import torch
from graph.helpers import assert_same_function, fashion_mnist_batch, small_inputs
from graph.nets import (
    SAME_PADDING_WARNING,
    SUPPORTED,
    FunctionalNet,
    build,
)
from torch import fx

from intq.convert.from_graph import convert_to_program
from intq.convert.program import QConcat
from intq.fakequant import Quantizer, activation_spec, weight_spec
from intq.graph import FusedAdd, FusedConv2d, OpKind, op_kind
from intq.graph.place import (
    ACT_PREFIX,
    LOSSLESS,
    activation_quantizers,
    is_float_output_linear,
    quant_layers,
    source_node,
)
from intq.graph.qmodules import QuantConv2d, QuantLinear
from intq.ptq import calibrate, prepare_ptq, quantize, set_fake_quant
from intq.recipes import get_recipe

from .nets import images

RECIPE = get_recipe()


def prepared(name: str, recipe=RECIPE) -> fx.GraphModule:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Using padding='same'")
        return prepare_ptq(build(name), fashion_mnist_batch(2), recipe)


def is_quantizer(node: fx.Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith(f"{ACT_PREFIX}.")


def module_of(gm: fx.GraphModule, node: fx.Node):
    return gm.get_submodule(node.target) if node.op == "call_module" else None


def quantizer_nodes(gm: fx.GraphModule) -> list[fx.Node]:
    return [n for n in gm.graph.nodes if is_quantizer(n)]


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "resnet", "inception"])
def test_every_fused_op_has_exactly_its_quantizer_as_reader(name):
    """conv+BN+ReLU and add+ReLU are single nodes whose single reader is their quantizer:
    nothing can sit between the conv and its BN/ReLU, or between the add and its ReLU."""
    gm = prepared(name)
    fused = [n for n in gm.graph.nodes
             if isinstance(module_of(gm, n), QuantConv2d | QuantLinear | FusedAdd)
             and not is_float_output_linear(gm, n)]  # the classifier: float output
    assert fused
    for node in fused:
        assert [is_quantizer(u) for u in node.users] == [True], node.name
    kinds = {op_kind(gm, n) for n in gm.graph.nodes}
    assert not kinds & {OpKind.RELU, OpKind.RELU6, OpKind.BATCHNORM, OpKind.CONV}
    # ... and the quantizers are exactly: the input + the fused ops + the average pools
    owners = [n.args[0] for n in quantizer_nodes(gm)]
    pools = [n for n in gm.graph.nodes
             if op_kind(gm, n) in (OpKind.AVG_POOL, OpKind.GLOBAL_AVG_POOL)]
    assert sorted(n.name for n in owners) == sorted(
        n.name for n in [*fused, *pools, next(iter(gm.graph.nodes))])


def test_resnet_relus_are_inside_the_fused_ops():
    gm = prepared("resnet")
    adds = [m for m in gm.modules() if isinstance(m, FusedAdd)]
    assert [a.activation for a in adds] == ["relu", "relu"]
    assert gm.get_submodule("conv1").activation == "relu"          # stem conv+bn+relu
    assert gm.get_submodule("layer1.conv2").activation is None      # relu comes after the add


def test_the_model_input_gets_a_quantizer():
    gm = prepared("mobilenet_v1")
    x = next(iter(gm.graph.nodes))
    assert x.op == "placeholder" and [is_quantizer(u) for u in x.users] == [True]
    first = next(m for _, m in quant_layers(gm))
    assert first.input_quantizer is gm.get_submodule(f"{ACT_PREFIX}.{x.name}")


@pytest.mark.parametrize("name", ["resnet", "inception", "functional"])
def test_lossless_ops_reuse_their_input_quantizer(name):
    """max pool, flatten, reshape, pad and cat get no quantizer of their own; a layer after
    them takes the quantizer before them as S_in of its int32 bias grid."""
    gm = prepared(name)
    lossless = [n for n in gm.graph.nodes if op_kind(gm, n) in LOSSLESS]
    assert lossless
    for node in lossless:
        assert not any(is_quantizer(u) for u in node.users), node.name
        assert is_quantizer(source_node(gm, node)), node.name
    for node in gm.graph.nodes:
        layer = module_of(gm, node)
        if isinstance(layer, QuantConv2d | QuantLinear):
            expected = gm.get_submodule(source_node(gm, node.args[0]).target)
            assert layer.input_quantizer is expected, node.name


def test_lossless_spellings_are_all_met():
    kinds = set()
    for name in ("resnet", "inception", "functional"):
        gm = prepared(name)
        kinds |= {op_kind(gm, n) for n in gm.graph.nodes}
    assert {OpKind.MAX_POOL, OpKind.FLATTEN, OpKind.PAD, OpKind.CAT} <= kinds


def test_layer_after_max_pool_binds_the_quantizer_before_it():
    gm = prepared("resnet")  # conv1 -> act_q.conv1 -> maxpool -> layer1.conv1
    assert gm.get_submodule("layer1.conv1").input_quantizer is gm.get_submodule("act_q.conv1")


def test_concat_inputs_share_one_quantizer_that_observes_every_branch():
    gm = prepare_ptq(build("inception"), fashion_mnist_batch(2),
                     get_recipe(observer="minmax"))
    cat = next(n for n in gm.graph.nodes if op_kind(gm, n) == OpKind.CAT)
    targets = {source_node(gm, arg).target for arg in cat.args[0]}
    assert len(targets) == 1 and len(cat.args[0]) == 4
    shared = gm.get_submodule(targets.pop())
    seen: list[torch.Tensor] = []
    shared.register_forward_pre_hook(lambda _, args: seen.append(args[0].detach().clone()))
    batches = list(images(16).split(8))
    calibrate(gm, batches, progress=False, engine="torch")  # the hook sees eager calls
    assert len(seen) == 4 * len(batches)  # every branch, every batch
    lows = torch.stack([s.min() for s in seen])
    highs = torch.stack([s.max() for s in seen])
    assert shared.min_val == lows.min() and shared.max_val == highs.max()
    branch_lows = lows.reshape(len(batches), 4).min(0).values
    assert (branch_lows > lows.min()).any()  # some branch alone would give another range


def test_concat_inputs_have_identical_qtensors_in_the_program():
    qgm = quantize(build("inception"), images(8), progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    concats = [op for op in program.ops if isinstance(op, QConcat)]
    assert len(concats) == 1
    qts = [program.tensors[name] for name in (*concats[0].inputs, concats[0].output)]
    # scale, zero point and dtype identical; qmin differs only by the branches' ReLU clamps
    assert len({(t.scale, t.zero_point, t.dtype) for t in qts}) == 1
    assert {t.qmax for t in qts} == {127}
    assert {t.qmin for t in qts[:-1]} == {qts[0].zero_point, -128}  # b4 has no ReLU


def test_weight_only_recipe_places_no_activation_quantizers():
    recipe = get_recipe("sym-per-channel-8", weight_only=True)
    gm = prepared("resnet", recipe)
    assert list(activation_quantizers(gm)) == [] and not hasattr(gm, ACT_PREFIX)
    assert not quantizer_nodes(gm)
    layers = dict(quant_layers(gm))
    assert len(layers) == 7 and all(m.input_quantizer is None for m in layers.values())
    qgm = quantize(build("resnet"), images(8), recipe, progress=False)
    for layer in dict(quant_layers(qgm)).values():
        assert layer.weight_quantizer.frozen and layer.weight_quantizer.fake_quant
        assert layer.simulated_bias() is layer.layer.bias  # float bias without S_in


@pytest.mark.filterwarnings(SAME_PADDING_WARNING)
@pytest.mark.parametrize("name", list(SUPPORTED))
def test_prepared_graph_without_fake_quant_is_the_float_model(name):
    """BN folding through prepare_ptq is exact to 1e-5 relative: with fake quantization off
    the quantized graph is the float model."""
    model = build(name)
    gm = prepare_ptq(model, fashion_mnist_batch(2), RECIPE)
    set_fake_quant(gm, False)
    assert_same_function(gm, model, small_inputs())


def test_set_fake_quant_switches_every_quantizer():
    model = build("mobilenet_v2")
    qgm = quantize(model, images(8), progress=False)
    x = images(4)
    with torch.no_grad():
        quantized = qgm(x)
        set_fake_quant(qgm, False)
        assert not any(m.fake_quant for m in qgm.modules() if isinstance(m, Quantizer))
        unquantized = qgm(x)
        set_fake_quant(qgm, True)
        assert torch.equal(qgm(x), quantized) and not torch.equal(unquantized, quantized)
    assert all(m.fake_quant for m in qgm.modules() if isinstance(m, Quantizer))


@pytest.mark.filterwarnings(SAME_PADDING_WARNING)
def test_functional_convs_are_captured_and_quantized():
    """F.conv2d with parameters, F.pad / ZeroPad2d, grouped convs, F.linear: every conv and
    linear becomes a simulated-quantized layer, and the result stays close to float."""
    model = FunctionalNet().eval()
    qgm = quantize(model, images(16), progress=False)
    layers = dict(quant_layers(qgm))
    assert sum(isinstance(m, QuantConv2d) for m in layers.values()) == 6
    assert sum(isinstance(m, QuantLinear) for m in layers.values()) == 1
    assert {m.layer.groups for m in layers.values() if isinstance(m, QuantConv2d)} == {1, 2, 8}
    x = fashion_mnist_batch(32)[16:]
    with torch.no_grad():
        want, got = model(x), qgm(x)
    assert (got - want).abs().max() <= 0.15 * want.abs().max()


def test_overrides_reach_the_quantizers():
    w4, a16 = weight_spec("sym-per-channel", 4), activation_spec(16, observer="minmax")
    recipe = (get_recipe().with_override("layer1.*", weight=w4)
              .with_override("layer2.conv1", activation=a16)
              .with_override("layer2.conv2", keep_float=True))
    gm = prepare_ptq(build("resnet"), fashion_mnist_batch(2), recipe)
    layers = dict(quant_layers(gm))
    assert {n: m.weight_quantizer.spec.bits for n, m in layers.items()} == {
        "conv1": 8, "layer1.conv1": 4, "layer1.conv2": 4, "layer2.conv1": 8,
        "layer2.downsample.0": 8, "fc": 8}
    kept = gm.get_submodule("layer2.conv2")
    assert isinstance(kept, FusedConv2d) and kept.bn is None  # folded, not quantized
    quantizers = dict(activation_quantizers(gm))
    assert quantizers["layer2_conv1"].spec == a16
    assert quantizers["conv1"].spec == recipe.activation
    assert "layer2_conv2" in quantizers  # a float layer's output is still quantized
