"""``intq eval MODEL.onnx``: accuracy of an ONNX model on labelled data, agreement with a
float reference model, fixed-batch models, and one-line errors."""

import json
import textwrap
import warnings

import numpy as np
import pytest
import torch

from intq.cli import main

TINY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(6, 7))
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """tiny.py:build, its float ONNX export with a dynamic and with a fixed batch (5), and
    labelled data on which the model is right on exactly 8 of 12 samples."""
    folder = tmp_path_factory.mktemp("eval_onnx")
    (folder / "tiny.py").write_text(TINY)
    namespace = {}
    exec(TINY, namespace)
    model = namespace["build"]().eval()
    x = torch.randn(12, 1, 10, 10, generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notes
        predicted = model(x).argmax(dim=1)
        for name, dynamic in (("dynamic", {"input": {0: "n"}}), ("fixed", None)):
            example = x[:5] if dynamic is None else x[:1]
            torch.onnx.export(model, (example,), str(folder / f"{name}.onnx"), dynamo=False,
                              opset_version=17, input_names=["input"], dynamic_axes=dynamic)
    y = predicted.clone()
    y[:4] = (predicted[:4] + 1) % 7
    np.savez(folder / "data.npz", x=x.numpy(), y=y.numpy())
    return folder


def _json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("variant", ["dynamic", "fixed"])
def test_accuracy_and_agreement_with_the_float_reference(files, capsys, variant):
    argv = ["eval", str(files / f"{variant}.onnx"), "--data", str(files / "data.npz"),
            "--reference", f"{files / 'tiny.py'}:build", "--batch-size", "4"]
    out = _json(capsys, argv)
    assert out["kind"] == "onnx" and out["samples"] == 12 and out["labelled"] is True
    assert out["correct"] == 8 and out["top1_accuracy"] == 8 / 12
    ref = out["reference"]
    assert ref["model"] == "tiny" and ref["weights"] == "factory"
    assert ref["top1_accuracy"] == 8 / 12
    agreement = ref["agreement"]
    assert agreement["top1"] == 1.0 and agreement["top5"] == 1.0
    assert agreement["sqnr_db"] is None or agreement["sqnr_db"] > 80  # float32 ulps or equal
    assert agreement["kl_divergence"] < 1e-9
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "top-1 accuracy    66.67% (8/12)" in text and "top-1 agreement 100.00%" in text


def test_without_reference_reports_accuracy_only(files, capsys):
    out = _json(capsys, ["eval", str(files / "dynamic.onnx"), "--data",
                         str(files / "data.npz"), "--n", "6"])
    assert out["samples"] == 6 and out["reference"] is None
    assert out["correct"] == 2  # samples 0-3 are wrong, 4-5 right


def _error(capsys, argv, code=1) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("intq: error: ")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_errors_are_one_line(files, tmp_path, capsys):
    data = ["--data", str(files / "data.npz")]
    (tmp_path / "junk.onnx").write_text("not a model")
    err = _error(capsys, ["eval", str(tmp_path / "junk.onnx"), *data])
    assert "not a valid ONNX model" in err
    onnx_model = str(files / "dynamic.onnx")
    err = _error(capsys, ["eval", onnx_model, *data, "--weights", "w.safetensors"], code=2)
    assert "give --reference" in err
    err = _error(capsys, ["eval", onnx_model], code=2)
    assert "give --data DATA: no zoo dataset has 1x10x10 inputs" in err
    err = _error(capsys, ["eval", "mobilenet-v1-fmnist", "--reference", "x.py:f"], code=2)
    assert "give MODEL.onnx" in err
    err = _error(capsys, ["eval", onnx_model, *data, "--reference", "mobilenet-v1-fmnist"])
    assert "takes 1x28x28 inputs but the ONNX model takes 1x10x10" in err
    np.save(tmp_path / "rgb.npy", np.zeros((2, 3, 10, 10), np.float32))
    err = _error(capsys, ["eval", onnx_model, "--data", str(tmp_path / "rgb.npy")])
    assert "expected inputs float32 of shape (N, 1, 10, 10)" in err
