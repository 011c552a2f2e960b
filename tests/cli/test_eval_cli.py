"""``intq eval``: results on small data and one-line errors (exit code, no traceback)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from intq.cli import main
from intq.zoo.fashion_mnist import FASHION_MNIST_DIR
from intq.zoo.registry import get_zoo_model

MODEL = "mobilenet-v1-fmnist"
INTQ = Path(sys.executable).with_name("intq")


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """A randomly initialized zoo architecture, its weights file, and labelled .npz data."""
    folder = tmp_path_factory.mktemp("eval_cli")
    torch.manual_seed(0)
    model = get_zoo_model(MODEL).build().eval()
    weights = folder / "random.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    x = torch.randn(12, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    y = predicted.clone()
    y[:4] = (predicted[:4] + 1) % 10  # exactly 8 of 12 correct
    np.savez(folder / "data.npz", x=x.numpy(), y=y.numpy())
    return folder, weights


def _run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_labelled_npz_reports_accuracy(random_model, capsys):
    folder, weights = random_model
    argv = ["eval", MODEL, "--weights", str(weights), "--data", str(folder / "data.npz")]
    out = _run_json(capsys, [*argv, "--json", "--batch-size", "5"])
    assert out["samples"] == 12 and out["labelled"] is True
    assert out["correct"] == 8 and out["top1_accuracy"] == 8 / 12
    assert out["weights"] == str(weights) and out["zoo_float_accuracy"] is None
    assert sum(out["top1_histogram"].values()) == 12
    assert 0.1 <= out["mean_max_softmax"] <= 1
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "top-1 accuracy    66.67% (8/12)" in text and "mean max-softmax" in text


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_default_data_is_the_models_dataset_and_n_limits_it(random_model, capsys):
    _, weights = random_model
    out = _run_json(capsys, ["eval", MODEL, "--weights", str(weights), "--n", "20", "--json"])
    assert out["data"] == "fashion-mnist:test" and out["samples"] == 20 and out["labelled"]


def test_unlabelled_data_reports_confidence_only(random_model, capsys, tmp_path):
    _, weights = random_model
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 28, 28), np.float32))
    argv = ["eval", MODEL, "--weights", str(weights), "--data", str(tmp_path / "x.npy")]
    out = _run_json(capsys, [*argv, "--json"])
    assert out["labelled"] is False and out["top1_accuracy"] is None and out["correct"] is None
    assert list(out["top1_histogram"].values()) == [3]  # identical inputs, one class
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "without labels: confidence only" in text and "top-1 accuracy" not in text


def test_efficientnet_defaults_to_unlabelled_natural_images(capsys):
    out = _run_json(capsys, ["eval", "efficientnet-lite0", "--n", "2", "--json"])
    assert out["data"] == "natural-images:evaluation" and out["samples"] == 2
    assert out["weights"] == "published" and out["labelled"] is False
    assert sum(out["top1_histogram"].values()) == 2
    assert all(0 <= int(c) < 1000 for c in out["top1_histogram"])


def _error(capsys, argv, code=1):
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("intq: error: ")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_user_errors_are_one_line(random_model, capsys, tmp_path):
    folder, weights = random_model
    w = ["--weights", str(weights)]
    assert "unknown model 'nope'" in _error(capsys, ["eval", "nope"])
    err = _error(capsys, ["eval", MODEL, *w, "--data", str(tmp_path / "missing.npz")])
    assert "unknown data" in err and "missing.npz" in err
    np.save(tmp_path / "shape.npy", np.zeros((2, 3, 28, 28), np.float32))
    err = _error(capsys, ["eval", MODEL, *w, "--data", str(tmp_path / "shape.npy")])
    assert "expected inputs float32 of shape (N, 1, 28, 28), got float32 of shape" in err
    np.save(tmp_path / "dtype.npy", np.zeros((2, 1, 28, 28), np.float64))
    err = _error(capsys, ["eval", MODEL, *w, "--data", str(tmp_path / "dtype.npy")])
    assert "got float64 of shape (2, 1, 28, 28)" in err
    (tmp_path / "empty").mkdir()
    err = _error(capsys, ["eval", MODEL, *w, "--data", str(tmp_path / "empty")])
    assert "no images found" in err
    np.savez(tmp_path / "labels.npz", x=np.zeros((2, 1, 28, 28), np.float32), y=np.array([0, 10]))
    err = _error(capsys, ["eval", MODEL, *w, "--data", str(tmp_path / "labels.npz")])
    assert "labels up to 10 but the model has only 10 classes" in err


def test_weights_errors_are_one_line(capsys, tmp_path):
    (tmp_path / "w.pt").write_bytes(b"not read")
    assert "never unpickles" in _error(capsys, ["eval", MODEL, "--weights", str(tmp_path / "w.pt")])
    other = get_zoo_model("resnet-fmnist").build()
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "o.safetensors"
    )
    err = _error(capsys, ["eval", MODEL, "--weights", str(tmp_path / "o.safetensors")])
    assert "does not fit the model" in err
    err = _error(capsys, ["eval", MODEL, "--weights", str(tmp_path / "none.safetensors")])
    assert "does not exist" in err


def test_bad_n_is_a_usage_error(capsys):
    assert "must be >= 1" in _error(capsys, ["eval", MODEL, "--n", "0"], code=2)
    assert "not an integer" in _error(capsys, ["eval", MODEL, "--n", "many"], code=2)


def test_console_script_prints_one_line_and_exits_1(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 1, 32, 32), np.float32))
    result = subprocess.run(
        [str(INTQ), "eval", "efficientnet-lite0", "--data", str(tmp_path / "bad.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (
        f"intq: error: {tmp_path / 'bad.npy'}: expected inputs float32 of shape "
        "(N, 3, 224, 224), got float32 of shape (2, 1, 32, 32)\n"
    )
