"""``intq bench``: latency statistics of one ONNX model or of two measured interleaved, with
their ratio; invalid files and inputs are one-line errors."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from intq.cli import main


def _model(path, shape, size: int) -> str:
    """An ONNX model computing ``x @ W`` (``W``: size x size) for inputs of ``shape``."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [size, size],
                           np.ones(size * size, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:-1], size])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    return {
        "small": _model(folder / "small.onnx", ["batch", 16], 16),
        "large": _model(folder / "large.onnx", ["batch", 192], 192),
        "fixed": _model(folder / "fixed.onnx", [3, 16], 16),
        "dynamic": _model(folder / "dynamic.onnx", ["batch", "width"], 16),
    }


def _json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_vs_reports_both_models_and_their_ratio(models, capsys):
    argv = ["bench", models["small"], "--vs", models["large"], "--repeats", "7",
            "--warmup", "1", "--batch", "8"]
    out = _json(capsys, argv)
    small, large = out["models"]
    assert (small["path"], large["path"]) == (models["small"], models["large"])
    assert small["repeats"] == large["repeats"] == 7 and out["batch"] == 8
    for m in (small, large):
        assert 0 < m["min_ms"] <= m["p10_ms"] <= m["median_ms"] <= m["p90_ms"]
    assert out["speedup"] == pytest.approx(large["median_ms"] / small["median_ms"])
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(ratio of medians)" in text and ", interleaved" in text
    verdict = "faster than" if out["speedup"] >= 1 else "slower than"
    assert f"{models['small']} is " in text and verdict in text


def test_single_model_and_fixed_batch(models, capsys):
    out = _json(capsys, ["bench", models["fixed"], "--repeats", "3", "--threads", "2"])
    assert out["speedup"] is None and len(out["models"]) == 1 and out["threads"] == 2
    assert out["batch"] == out["models"][0]["batch"] == 3  # the model's own batch, not --batch
    assert main(["bench", models["fixed"], "--repeats", "3"]) == 0
    text = capsys.readouterr().out
    assert "median" in text and "1 thread, batch 3, 3 timed runs after 10 warm-up runs" in text


def _error(capsys, argv, code=1) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("intq: error: ")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_errors_are_one_line(models, tmp_path, capsys):
    (tmp_path / "junk.onnx").write_bytes(b"not protobuf")
    err = _error(capsys, ["bench", str(tmp_path / "junk.onnx")])
    assert f"not a valid ONNX model: {tmp_path / 'junk.onnx'}" in err
    err = _error(capsys, ["bench", models["small"], "--vs", str(tmp_path / "none.onnx")])
    assert "does not exist" in err
    err = _error(capsys, ["bench", models["dynamic"]])
    assert "dynamic axis 1 besides the batch" in err
    assert "must be >= 1" in _error(capsys, ["bench", models["small"], "--repeats", "0"], 2)
