"""``intq inspect`` (sensitivity table and chart), ``intq quantize --report DIR`` and the
mixed precision budget options: JSON reports, files written whole, one-line errors with the
right exit code and nothing written."""

import json

import onnx
import pytest
import torch

from intq.cli import main
from intq.zoo.fashion_mnist import FASHION_MNIST_DIR

pytestmark = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                reason="dataset-fashion-mnist not installed")
MODEL = "mobilenet-v1-fmnist"
QUANTIZERS = 10 + 11  # 10 conv/linear weights, 10 conv outputs + the input (no logits one)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The 2 shared cores: oversubscribed OpenMP threads make small convolutions slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_inspect_writes_chart_and_json(tmp_path, capsys):
    plot = tmp_path / "s.png"
    argv = ["inspect", MODEL, "--calib-size", "32", "--eval-size", "16", "--recipe",
            "sym-per-channel-4", "--plot", str(plot), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["rows"]) == QUANTIZERS and report["samples"] == 16
    assert report["recipe"].startswith("sym-per-channel-4") and report["plot"] == str(plot)
    assert all(r["only_on_sqnr_db"] > report["all_on_sqnr_db"] for r in report["rows"])
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == [plot.name]


@pytest.mark.parametrize("argv, code, message", [
    (["inspect", MODEL, "--plot", "out.txt"], 2, "must end in .png"),
    (["quantize", MODEL, "--max-size", "1kB", "--w-bits", "4"], 2, "drop --w-bits"),
    (["quantize", MODEL, "--target-agreement", "1.5"], 2, "fraction in (0, 1]"),
    (["quantize", MODEL, "--max-size", "3 parsecs"], 2, "kB/MB/GB"),
    (["quantize", MODEL, "--max-size", "1MB", "--weight-only"], 2, "no integer ONNX form"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, code,
                                                 message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == code
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_unreachable_size_names_the_smallest_model_and_writes_nothing(tmp_path, capsys):
    argv = ["quantize", MODEL, "--calib-size", "48", "--eval-size", "16", "--max-size", "1kB",
            "-o", str(tmp_path / "m.onnx"), "--report", str(tmp_path / "report")]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("intq: error: no configuration fits 1000 bytes: the smallest, "
                              "all 10 layers at 4-bit weights, is ")
    assert list(tmp_path.iterdir()) == []


def test_quantize_with_budget_and_report_dir(tmp_path, capsys):
    out, folder = tmp_path / "m.onnx", tmp_path / "report"
    argv = ["quantize", MODEL, "--calib-size", "48", "--eval-size", "32", "--repeats", "3",
            "--max-size", "60kB", "-o", str(out), "--report", str(folder), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    mixed = report["mixed_precision"]
    assert report["int8_size_bytes"] == out.stat().st_size == mixed["chosen"]["size_bytes"]
    assert out.stat().st_size <= 60_000
    assert report["calibration"]["samples"] == 32 and mixed["holdout_samples"] == 16
    low = sorted(name for name, bits in mixed["bits"].items() if bits == 4)
    assert low and len(mixed["bits"]) == 10
    int4 = [t for t in onnx.load(str(out)).graph.initializer
            if t.data_type == onnx.TensorProto.INT4]
    assert len(int4) == len(low)
    assert sorted(p.name for p in folder.iterdir()) == [
        "layers.md", "mixed_precision.json", "sensitivity.json", "sensitivity.md",
        "sensitivity.png"]
    table = json.loads((folder / "sensitivity.json").read_text())
    assert len(table["rows"]) == QUANTIZERS
    assert json.loads((folder / "mixed_precision.json").read_text())["bits"] == mixed["bits"]
