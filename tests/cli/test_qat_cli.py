"""``intq qat`` through the CLI entry point: files written, accuracies reported, refusals."""

import json

import numpy as np
import onnx
import pytest
import torch

import intq.cli
from intq.zoo import MODEL_ZOO, save_weights


@pytest.fixture(autouse=True)
def cli_env(monkeypatch):
    """Only the command under test, and one torch thread on the shared 2-core machine."""
    monkeypatch.setattr(intq.cli, "_COMMANDS", ("qat",))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def float_weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "v1.safetensors"
    return save_weights(MODEL_ZOO["mobilenet-v1-fmnist"].build(), path)


def test_qat_writes_onnx_and_checkpoint_and_reports_accuracies(tmp_path, float_weights, capsys):
    out = tmp_path / "v1.onnx"
    argv = ["qat", "mobilenet-v1-fmnist", "--weights", str(float_weights), "--n", "300",
            "--steps", "3", "--batch-size", "32", "--w-bits", "4", "-o", str(out), "--json"]
    assert intq.cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1.onnx", "v1.safetensors"]
    assert (summary["train_samples"], summary["holdout_samples"]) == (270, 30)
    assert summary["recipe"].startswith("sym-per-channel-4")
    onnx.checker.check_model(onnx.load(out))
    for key in ("float_accuracy", "qat_simulated_accuracy", "onnx_accuracy"):
        assert 0 <= summary[key] <= 1
    # the ONNX model computes the simulated integers: at most one hold-out answer differs
    assert np.isclose(summary["onnx_accuracy"], summary["qat_simulated_accuracy"], atol=1 / 30)


@pytest.mark.parametrize("argv, message", [
    (["--w-bits", "1"], "bits must be an integer in 2..16, got 1"),
    (["--per-tensor"], "no sym-per-layer scheme"),
    (["--recipe", "nope"], "unknown recipe 'nope'"),
])
def test_bad_recipe_options_are_usage_errors(argv, message, tmp_path, capsys):
    code = intq.cli.main(["qat", "mobilenet-v1-fmnist", *argv, "-o", str(tmp_path / "x.onnx")])
    assert code == 2 and message in capsys.readouterr().err


def test_output_must_be_onnx(tmp_path, capsys):
    assert intq.cli.main(["qat", "mobilenet-v1-fmnist", "-o", str(tmp_path / "x.tflite")]) == 2
    assert "must end in .onnx" in capsys.readouterr().err


def test_crops_need_held_out_data(tmp_path, capsys):
    argv = ["qat", "mobilenet-v1-fmnist", "--data", str(tmp_path), "--crops", "8",
            "-o", str(tmp_path / "x.onnx")]
    assert intq.cli.main(argv) == 2
    assert "--crops needs --eval DATA" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
