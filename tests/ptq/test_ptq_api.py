"""intq.ptq.quantize end to end: the user's model is left alone, recipes by name or value,
batching, and float fallback regions (leaf modules) for ops without an integer form."""

import numpy as np
import onnxruntime
import pytest
import torch
from graph.helpers import fashion_mnist_batch
from graph.nets import SwishNet, build
from torch import fx

from intq.convert.from_graph import convert_to_program, float_islands
from intq.convert.program import FloatSubgraph
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


def test_sigmoid_gate_is_integer_without_leaf_modules():
    """x·sigmoid(x) needs no leaf: the sigmoid is a 256-entry table, the product a QMul;
    the reference follows the simulation within 2 output steps."""
    qgm = quantize(seeded(SigmoidGateNet), images(32), progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    kinds = {type(op).__name__ for op in program.ops}
    assert {"QLookup", "QMul"} <= kinds
    assert not kinds & {"FloatOp", "FloatSubgraph"} and float_islands(program) == []
    x = fashion_mnist_batch(48)[32:]
    _assert_reference_follows_simulation(qgm, program, x)


def test_softmax_in_the_root_forward_is_a_float_island_at_the_output():
    """SwishNet's softmax has no integer form: it stays float in the program, named with
    its source line, and the written ONNX runs it in ONNX Runtime like the reference."""
    qgm = quantize(SwishNet().eval(), images(8), progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    (island,) = float_islands(program)
    assert island.op == "softmax" and island.exported
    assert "test_ptq_api" not in island.source and "nets.py" in island.source
    x = fashion_mnist_batch(4).numpy()
    want = run_reference(program, x)[program.outputs[0]]
    got = _onnx_outputs(program, x)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


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


def test_leaf_is_a_float_island_that_the_reference_and_onnx_runtime_run():
    """Dequantize -> FloatSubgraph (the torch gate exported to ONNX) -> Quantize: the
    reference interpreter reproduces the simulation, and the written ONNX the reference."""
    qgm = quantize(seeded(SigmoidGateNet), images(32), leaf_modules=["gate"], progress=False)
    program = convert_to_program(qgm, (1, 28, 28))
    islands = [op for op in program.ops if isinstance(op, FloatSubgraph)]
    assert [(op.output, op.inputs) for op in islands] == [("gate", ("conv1_dequantized",))]
    assert [i.node for i in float_islands(program)] == ["gate"]
    x = fashion_mnist_batch(48)[32:]
    _assert_reference_follows_simulation(qgm, program, x)
    want = run_reference(program, x.numpy())[program.outputs[0]]
    np.testing.assert_array_equal(_onnx_outputs(program, x.numpy()), want)


def test_keep_float_layer_is_a_float_island():
    """A recipe override keeps conv2 in float: no weight quantizer, its output quantized,
    a float island in the program beside the leaf gate, both exported."""
    recipe = get_recipe().with_override("conv2", keep_float=True)
    model = seeded(SigmoidGateNet)
    qgm = quantize(model, images(16), recipe, leaf_modules=["gate"], progress=False)
    assert isinstance(qgm.get_submodule("conv2"), FusedConv2d)
    assert [n for n, _ in quant_layers(qgm)] == ["conv1", "fc"]
    program = convert_to_program(qgm, (1, 28, 28))
    assert [op.output for op in program.ops if isinstance(op, FloatSubgraph)] == [
        "gate", "conv2"]
    x = fashion_mnist_batch(24)[16:]
    _assert_reference_follows_simulation(qgm, program, x)
    want = run_reference(program, x.numpy())[program.outputs[0]]
    np.testing.assert_array_equal(_onnx_outputs(program, x.numpy()), want)


def _assert_reference_follows_simulation(qgm, program, x):
    got = run_reference(program, x.numpy())[program.outputs[0]]
    with torch.no_grad():
        want = qgm(x).numpy()
    step = program.tensors[program.producer(program.outputs[0]).inputs[0]].scale
    assert np.abs(got - want).max() <= 2 * step


def _onnx_outputs(program, x):
    session = onnxruntime.InferenceSession(export_onnx(program).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]
