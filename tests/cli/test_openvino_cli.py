"""``intq quantize --onnx-format qdq`` writes a QDQ model that ``intq eval``/``intq bench
--runtime openvino`` run in OpenVINO; bad input gets one-line errors and no file."""

import json
import textwrap

import numpy as np
import onnx
import pytest

import intq.cli.quantize as quantize_cli
from intq.cli import main
from intq.runtime.onnxruntime import OrtSession

TINY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                             nn.Conv2d(8, 16, 3, stride=2), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openvino_cli")
    (folder / "tiny.py").write_text(TINY)
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.standard_normal((32, 1, 12, 12)).astype(np.float32))
    np.savez(folder / "xy.npz", x=rng.standard_normal((40, 1, 12, 12)).astype(np.float32),
             y=rng.integers(0, 10, 40))
    return folder


def _quantize(files, out, *extra):
    return ["quantize", f"{files / 'tiny.py'}:build", "--calib", str(files / "x.npy"),
            "--eval", str(files / "xy.npz"), "--repeats", "3", "-o", str(out), *extra]


@pytest.fixture(scope="module")
def qdq_model(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("qdq") / "tiny.qdq.onnx"
    assert main(_quantize(files, out, "--onnx-format", "qdq")) == 0
    return out


def _json(capsys, argv):
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_quantize_writes_qdq_and_eval_agrees_across_runtimes(files, qdq_model, tmp_path,
                                                           capsys):
    ops = {n.op_type for n in onnx.load(str(qdq_model)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    assert not ops & {"QLinearConv", "QGemm"}
    qop = tmp_path / "tiny.onnx"
    report = _json(capsys, _quantize(files, qop))
    assert report["onnx_format"] == "qoperator"
    x = np.load(files / "x.npy")[:8]
    np.testing.assert_array_equal(OrtSession(qdq_model).run(x), OrtSession(qop).run(x))
    argv = ["eval", str(qdq_model), "--data", str(files / "xy.npz")]
    ort, ov = _json(capsys, argv), _json(capsys, [*argv, "--runtime", "openvino"])
    assert (ort["runtime"], ov["runtime"]) == ("onnxruntime", "openvino")
    assert ov["samples"] == 40 and abs(ov["top1_accuracy"] - ort["top1_accuracy"]) <= 0.05
    main([*argv, "--runtime", "openvino"])
    assert "(OpenVINO, f32 precision)" in capsys.readouterr().out


def test_bench_openvino_against_onnxruntime(qdq_model, capsys):
    argv = ["bench", str(qdq_model), "--runtime", "openvino", "--vs", str(qdq_model),
            "--vs-runtime", "onnxruntime", "--repeats", "5", "--warmup", "1"]
    out = _json(capsys, argv)
    assert [m["runtime"] for m in out["models"]] == ["openvino", "onnxruntime"]
    assert out["speedup"] > 0 and all(m["repeats"] == 5 for m in out["models"])
    main(argv)
    text = capsys.readouterr().out
    assert "OpenVINO CPU (INFERENCE_PRECISION_HINT f32) vs ONNX Runtime CPU" in text


def _error(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_input_is_one_line(files, tmp_path, capsys, monkeypatch):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    code, err = _error(capsys, ["eval", str(junk), "--runtime", "openvino",
                                "--data", str(files / "xy.npz")])
    assert code == 1 and "not a valid ONNX model" in err and "\n" not in err
    code, err = _error(capsys, ["eval", "mobilenet-v1-fmnist", "--runtime", "openvino"])
    assert code == 2 and "--runtime applies to an ONNX MODEL" in err

    def refuse(program, path=None, **kwargs):
        raise ValueError("QSoftmax -> 'y': the QDQ ONNX writer cannot export QSoftmax")

    monkeypatch.setattr(quantize_cli, "export_onnx_qdq", refuse)
    out = tmp_path / "refused.onnx"
    code, err = _error(capsys, _quantize(files, out, "--onnx-format", "qdq"))
    assert code == 1 and err.endswith("cannot export QSoftmax") and "\n" not in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["junk.onnx"]
