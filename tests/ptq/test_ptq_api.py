"""intq.ptq.quantize end to end: the user's model is left alone, recipes by name or value,
batching, and float fallback regions (leaf modules) for ops without an integer form."""

import numpy as np
import pytest
import torch
from graph.helpers import fashion_mnist_batch
from graph.nets import SwishNet, build
from torch import fx

from intq.convert.from_graph import convert_to_program
from intq.convert.program import FloatOp
from intq.errors import IntqError
from intq.export import export_onnx
from intq.graph.fused import FusedConv2d
from intq.graph.place import quant_layers
from intq.ptq import quantize
from intq.recipes import get_recipe
from intq.runtime import run_reference

from .nets import SigmoidGate, SigmoidGateNet, images, seeded


@pytest.mark.parametrize("name", ["mobilenet_v1", "mobilenet_v2", "resnet", "inception"])
def test_quantized_model_is_close_to_float_and_the_model_is_untouched(name):
    """8-bit PTQ of the small families (random weights, BN stats randomized): outputs within
    5% of the output range of float (measured 0.7-3.7%)."""
    model = build(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    qgm = quantize(model, images(32), progress=False)
    assert isinstance(qgm, fx.GraphModule)
    assert not model.training
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    x = fashion_mnist_batch(48)[32:]
    with torch.no_grad():
        want, got = model(x), qgm(x)
    assert not torch.equal(got, want)
    assert (got - want).abs().max() <= 0.05 * want.abs().max()


def test_recipe_by_name_or_value_is_the_same():
    by_name = quantize(build("resnet"), images(8), "asym-per-layer-4", progress=False)
    by_value = quantize(build("resnet"), images(8), get_recipe("asym-per-layer-4"),
                        progress=False)
    a, b = by_name.state_dict(), by_value.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert {m.weight_quantizer.spec.bits for _, m in quant_layers(by_name)} == {4}
    with pytest.raises(ValueError, match="unknown recipe 'int8'"):
        quantize(build("resnet"), images(8), "int8", progress=False)


def test_batch_size_splits_a_tensor():
    x = images(10)
    split = quantize(build("mobilenet_v1"), x, batch_size=4, progress=False)
    listed = quantize(build("mobilenet_v1"), [x[:4], x[4:8], x[8:]], progress=False)
    one = quantize(build("mobilenet_v1"), x, batch_size=10, progress=False)
    state, listed_state = split.state_dict(), listed.state_dict()
    assert all(torch.equal(state[k], listed_state[k]) for k in state)
    # percentile ranges come from merged histograms: the split changes bin edges, not much
    assert one.get_submodule("act_q.x").scale == pytest.approx(
        split.get_submodule("act_q.x").scale.item(), rel=0.02)


def test_progress_bar_is_off_when_not_a_terminal(capsys):
    quantize(build("mobilenet_v1"), images(8), progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_unsupported_op_error_names_the_node_and_the_way_out():
    with pytest.raises(IntqError, match=r"no integer implementation for sigmoid: torch\.sigmoid, "
                                        r"mul: operator\.mul; .* leaf_modules=\['gate'\]"):
        quantize(seeded(SigmoidGateNet), images(8), progress=False)


def test_unsupported_op_in_the_root_forward_has_no_module_to_name():
    """SwishNet: the Swish module is named; its softmax in the root forward has no module
    of its own (the user wraps it, or keeps it out of the quantized model)."""
    with pytest.raises(IntqError, match=r"softmax.*leaf_modules=\['act'\]"):
        quantize(SwishNet().eval(), images(8), progress=False)
    with pytest.raises(IntqError, match=r"softmax.*leaf_modules=\[\.\.\.\]"):
        quantize(SwishNet().eval(), images(8), leaf_modules=["act"], progress=False)


@pytest.mark.parametrize("leaf", ["gate", SigmoidGate], ids=["by-name", "by-type"])
def test_a_leaf_module_is_a_float_region(leaf):
    """The gate stays float between two quantizers: it reads the quantized conv1 output and
    its own output is quantized; on the calibration images (nothing out of range) the model
    stays within 2% of float."""
    model, x = seeded(SigmoidGateNet), images(32)
    qgm = quantize(model, x, get_recipe(observer="minmax"), leaf_modules=[leaf],
                   progress=False)
    gate_node = next(n for n in qgm.graph.nodes if n.target == "gate")
    assert str(gate_node.args[0].target) == "act_q.conv1"
    assert [str(u.target) for u in gate_node.users] == ["act_q.gate"]
    with torch.no_grad():
        want, got = model(x), qgm(x)
    assert (got - want).abs().max() <= 0.02 * want.abs().max()


def test_leaf_converts_to_a_callable_float_op_that_the_reference_runs():
    """Dequantize -> FloatOp("callable", the torch gate) -> Quantize: the reference
    interpreter reproduces the simulation (same float32 values into the same torch module;
    the convs around it agree to 1 LSB as everywhere, see tests/agreement)."""
    qgm = quantize(seeded(SigmoidGateNet), images(32), leaf_modules=["gate"], progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    float_ops = [op for op in program.ops if isinstance(op, FloatOp)]
    assert [(op.op, op.inputs) for op in float_ops] == [("callable", ("conv1_dequantized",))]
    x = fashion_mnist_batch(48)[32:]
    got = run_reference(program, x.numpy())[program.outputs[0]]
    with torch.no_grad():
        want = qgm(x).numpy()
    step = program.tensors[program.producer(program.outputs[0]).inputs[0]].scale
    assert np.abs(got - want).max() <= 2 * step


def test_a_float_region_cannot_be_exported_to_onnx():
    qgm = quantize(seeded(SigmoidGateNet), images(8), leaf_modules=["gate"], progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    with pytest.raises(ValueError, match=r"'gate'.*callable FloatOp cannot be exported"):
        export_onnx(program)


def test_keep_float_layer_is_a_float_region():
    """A recipe override keeps conv2 in float: no weight quantizer, its output quantized,
    a callable FloatOp in the program."""
    recipe = get_recipe().with_override("conv2", keep_float=True)
    model = seeded(SigmoidGateNet)
    qgm = quantize(model, images(16), recipe, leaf_modules=["gate"], progress=False)
    assert isinstance(qgm.get_submodule("conv2"), FusedConv2d)
    assert [n for n, _ in quant_layers(qgm)] == ["conv1", "fc"]
    program = convert_to_program(qgm, (1, 28, 28))
    assert [op.output for op in program.ops if isinstance(op, FloatOp)] == ["gate", "conv2"]
    x = fashion_mnist_batch(24)[16:]
    with torch.no_grad():
        want = qgm(x).numpy()
    got = run_reference(program, x.numpy())[program.outputs[0]]
    step = program.tensors[program.producer(program.outputs[0]).inputs[0]].scale
    assert np.abs(got - want).max() <= 2 * step
