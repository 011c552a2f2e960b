"""Per-layer SQNR report: weight rows are the SQNR of each folded weight vs its fake-quantized
value (also recomputed here in float64 from the quantizer's scale and zero point), one
activation row with own and end-to-end SQNR per activation quantizer, one float output row for
the classifier (no output quantizer, so no own error; end to end = the logits' SQNR), the
model's fake-quant switches left as they were, and a markdown table with one row per tensor."""

import statistics

import numpy as np
import pytest
import torch
from graph.helpers import fashion_mnist_batch
from graph.nets import build

from intq.fakequant import Quantizer
from intq.graph.place import activation_quantizers, float_output_layers, quant_layers
from intq.ptq import calibrate, prepare_ptq, quantize
from intq.qmath import sqnr_db
from intq.recipes import get_recipe
from intq.report import LayerRow, format_layer_report, layer_report

CALIBRATION = fashion_mnist_batch(24)
CALIB, EVAL = CALIBRATION[:16], CALIBRATION[16:]



def quantized(name: str = "mobilenet_v2", recipe: str = "sym-per-channel-4"):
    return quantize(build(name), CALIB, get_recipe(recipe, observer="minmax"), progress=False)


def fake_quant_float64(x: torch.Tensor, q: Quantizer) -> np.ndarray:
    """(clip(round_half_even(x/S) + Z, qmin, qmax) - Z)·S in float64, S and Z per channel
    along axis 0 for per-channel specs."""
    x = x.detach().double().numpy()
    shape = (-1,) + (1,) * (x.ndim - 1) if q.spec.per_channel else ()
    s = q.scale.double().numpy().reshape(shape)
    z = q.zero_point.double().numpy().reshape(shape)
    return (np.clip(np.round(x / s) + z, q.spec.qmin, q.spec.qmax) - z) * s


def sqnr_float64(ref, approx) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return 10 * np.log10(np.sum(ref**2) / np.sum((ref - approx) ** 2))


@pytest.mark.parametrize("recipe", ["sym-per-channel-4", "asym-per-layer-8"])
def test_weight_rows_are_sqnr_of_the_weight_vs_its_fake_quantized_value(recipe):
    qgm = quantized("mobilenet_v1", recipe)
    rows = [r for r in layer_report(qgm, EVAL) if r.kind == "weight"]
    layers = list(quant_layers(qgm))
    assert [r.name for r in rows] == [name for name, _ in layers]
    for row, (_, layer) in zip(rows, layers, strict=True):
        w, q = layer.layer.weight.detach(), layer.weight_quantizer
        with torch.no_grad():
            assert row.sqnr_db == sqnr_db(w, q(w))
        assert row.sqnr_db == pytest.approx(sqnr_float64(w, fake_quant_float64(w, q)), rel=1e-4)
        assert row.spec == q.spec.describe()
        assert row.end_to_end_sqnr_db is None


def test_weight_rows_give_max_over_median_channel_range():
    """The lower median for an even number of channels (torch.median)."""
    qgm = quantized("mobilenet_v1")
    rows = {r.name: r for r in layer_report(qgm, EVAL) if r.kind == "weight"}
    for name, layer in quant_layers(qgm):
        w = layer.layer.weight.detach().double().numpy().reshape(len(layer.layer.weight), -1)
        ranges = (w.max(axis=1) - w.min(axis=1)).tolist()
        want = max(ranges) / statistics.median_low(ranges)
        assert rows[name].channel_range_spread == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", [
    "mobilenet_v1", "mobilenet_v2", "resnet", "inception"])
def test_one_activation_row_per_activation_quantizer_after_the_weights(name):
    qgm = quantized(name)
    rows = layer_report(qgm, EVAL)
    layers, acts = dict(quant_layers(qgm)), dict(activation_quantizers(qgm))
    outputs = dict(float_output_layers(qgm))
    assert len(outputs) == 1  # the classifier
    assert [r.kind for r in rows] == (["weight"] * len(layers) + ["activation"] * len(acts)
                                      + ["float output"])
    assert rows[-1].name == next(iter(outputs)) and rows[-1].sqnr_db == float("inf")
    act_rows = rows[len(layers):-1]
    assert [r.name for r in act_rows] == list(acts)
    for row in act_rows:
        assert row.spec == acts[row.name].spec.describe()
        assert np.isfinite(row.sqnr_db) and np.isfinite(row.end_to_end_sqnr_db)
        assert row.channel_range_spread is None


def test_input_row_own_and_end_to_end_are_the_sqnr_of_the_input_vs_its_fake_quant():
    """Nothing runs before the input quantizer: both numbers are SQNR(x, Q(x))."""
    qgm = quantized()
    row = next(r for r in layer_report(qgm, EVAL) if r.name == "x")
    want = sqnr_float64(EVAL, fake_quant_float64(EVAL, qgm.get_submodule("act_q.x")))
    assert row.sqnr_db == pytest.approx(want, rel=1e-4)
    assert row.end_to_end_sqnr_db == row.sqnr_db


def calibrated_without_bias_correction(name: str = "mobilenet_v2"):
    model = build(name)
    qgm = prepare_ptq(model, CALIB[:2], get_recipe("sym-per-channel-4", observer="minmax"))
    calibrate(qgm, [CALIB], progress=False, bias_correction=False)
    return model, qgm


def output_row(qgm, rows: list[LayerRow]) -> LayerRow:
    """The row of the model's output: the classifier's float output."""
    (classifier, _), = float_output_layers(qgm)
    return next(r for r in rows if (r.name, r.kind) == (classifier, "float output"))


def test_end_to_end_sqnr_of_the_output_is_float_model_vs_quantized_model():
    model, qgm = calibrated_without_bias_correction()
    with torch.no_grad():
        want = sqnr_db(model(EVAL), qgm(EVAL))
    assert output_row(qgm, layer_report(qgm, EVAL)).end_to_end_sqnr_db == pytest.approx(
        want, rel=1e-3)


def test_end_to_end_sqnr_of_the_output_uses_the_float_model_after_bias_correction():
    model = build("mobilenet_v2")
    qgm = quantize(model, CALIB, get_recipe("sym-per-channel-4", observer="minmax"),
                   progress=False)
    with torch.no_grad():
        want = sqnr_db(model(EVAL), qgm(EVAL))
    assert output_row(qgm, layer_report(qgm, EVAL)).end_to_end_sqnr_db == pytest.approx(
        want, rel=1e-3)


def test_fake_quant_switches_and_outputs_are_as_before_the_report():
    qgm = quantized()
    quantizers = [m for m in qgm.modules() if isinstance(m, Quantizer)]
    for i, q in enumerate(quantizers):
        q.fake_quant = i % 3 != 1  # a mixed pattern, not just all on
    before = [q.fake_quant for q in quantizers]
    with torch.no_grad():
        out = qgm(EVAL)
    layer_report(qgm, EVAL)
    assert [q.fake_quant for q in quantizers] == before
    assert all((q.frozen, q.observe) == (True, False) for q in quantizers)
    with torch.no_grad():
        assert torch.equal(qgm(EVAL), out)


def test_markdown_has_one_row_per_tensor():
    qgm = quantized()
    rows = layer_report(qgm, EVAL)
    lines = format_layer_report(rows).splitlines()
    assert lines[0].startswith("| tensor | kind |") and set(lines[1]) <= set("|-")
    body = lines[2:]
    assert len(body) == len(rows)
    for line, row in zip(body, rows, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [row.name, row.kind, f"{row.sqnr_db:.1f}"]
        assert len(cells) == 5
        assert (cells[3] == "") == (row.end_to_end_sqnr_db is None)


def test_markdown_worst_rows_are_the_lowest_sqnr_first():
    rows = layer_report(quantized(), EVAL)
    body = format_layer_report(rows, worst=4).splitlines()[2:]
    key = {(r.name, r.kind): r.end_to_end_sqnr_db or r.sqnr_db for r in rows}
    want = sorted(key, key=key.get)[:4]
    assert [tuple(c.strip() for c in line.split("|")[1:3]) for line in body] == want
