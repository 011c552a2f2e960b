"""Quantizer sensitivity: one row per weight quantizer (layer order) and per activation
quantizer (graph order); each quantizer alone adds less logit noise than all of them together;
the input quantizer's only-on row equals the float model run on the fake-quantized input
(computed here without the graph's switches); the switches are left as they were; the chart
is a PNG."""

import pytest
import torch
from graph.helpers import fashion_mnist_batch
from graph.nets import build

from intq.eval.metrics import logit_sqnr_db, top1_agreement
from intq.fakequant import Quantizer
from intq.graph.place import activation_quantizers, quant_layers
from intq.ptq import quantize
from intq.recipes import get_recipe
from intq.report.sensitivity import format_sensitivity, quantizer_sensitivity
from intq.report.sensitivity_plot import sensitivity_png

DATA = fashion_mnist_batch(64)
CALIB, EVAL = DATA[:32], DATA[32:]


def quantized(net: str, recipe: str):
    torch.manual_seed(0)
    model = build(net).eval()
    return model, quantize(model, CALIB, get_recipe(recipe, observer="minmax"), progress=False)


@pytest.fixture(scope="module")
def mobilenet_w4():
    model, qgm = quantized("mobilenet_v2", "sym-per-channel-4")
    return model, qgm, quantizer_sensitivity(qgm, EVAL)


def test_one_row_per_quantizer_in_order(mobilenet_w4):
    _, qgm, table = mobilenet_w4
    want = [("weight", name, layer.weight_quantizer.spec.describe())
            for name, layer in quant_layers(qgm)]
    want += [("activation", name, q.spec.describe()) for name, q in activation_quantizers(qgm)]
    assert [(r.kind, r.name, r.spec) for r in table.rows] == want
    assert table.samples == len(EVAL)
    for r in table.rows:
        assert 0 <= r.only_on_agreement <= 1 and 0 <= r.only_off_agreement <= 1


def test_all_on_baseline_is_the_quantized_model_vs_the_float_model(mobilenet_w4):
    model, qgm, table = mobilenet_w4
    with torch.no_grad():
        ref, out = model(EVAL), qgm(EVAL)
    assert table.all_on_sqnr_db == pytest.approx(logit_sqnr_db(ref, out), abs=0.01)
    assert table.all_on_agreement == top1_agreement(ref, out)


@pytest.mark.parametrize("net, recipe", [("mobilenet_v2", "sym-per-channel-4"),
                                         ("resnet", "asym-per-layer-8")])
def test_each_quantizer_alone_is_more_faithful_than_all(net, recipe):
    _, qgm = quantized(net, recipe)
    table = quantizer_sensitivity(qgm, EVAL)
    assert all(r.only_on_sqnr_db > table.all_on_sqnr_db for r in table.rows)


def test_input_quantizer_alone_is_the_float_model_on_quantized_inputs(mobilenet_w4):
    model, qgm, table = mobilenet_w4
    (row,) = [r for r in table.rows if r.kind == "activation" and r.name == "x"]
    q_in = dict(activation_quantizers(qgm))["x"]
    with torch.no_grad():
        want = logit_sqnr_db(model(EVAL), model(q_in(EVAL)))
    assert row.only_on_sqnr_db == pytest.approx(want, abs=0.01)


def test_switches_are_left_as_they_were(mobilenet_w4):
    _, qgm, _ = mobilenet_w4
    quantizers = [m for m in qgm.modules() if isinstance(m, Quantizer)]
    quantizers[1].fake_quant = False
    with torch.no_grad():
        before = qgm(EVAL)
    quantizer_sensitivity(qgm, EVAL[:4])
    assert [q.fake_quant for q in quantizers] == [i != 1 for i in range(len(quantizers))]
    with torch.no_grad():
        assert torch.equal(qgm(EVAL), before)
    quantizers[1].fake_quant = True


def test_table_and_chart(mobilenet_w4):
    _, _, table = mobilenet_w4
    text = format_sensitivity(table)
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == 1 + len(
        table.rows)
    assert format_sensitivity(table, worst=3).count("\n| ") == 4
    assert sensitivity_png(table).startswith(b"\x89PNG\r\n\x1a\n")
