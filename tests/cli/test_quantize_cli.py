"""``intq quantize``: the written ONNX model is the IntProgram, run exactly by ONNX Runtime;
the JSON report; one-line errors with the right exit code and no file left behind."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import intq.cli.quantize as quantize_cli
from intq.cli import main
from intq.convert.serialize import load_program
from intq.runtime.onnxruntime import OrtSession
from intq.runtime.reference import run_reference
from intq.zoo.fashion_mnist import FASHION_MNIST_DIR
from intq.zoo.registry import get_zoo_model

ZOO_MODEL = "mobilenet-v1-fmnist"
INTQ = Path(sys.executable).with_name("intq")
QUICK = ["--calib-size", "64", "--eval-size", "64", "--repeats", "3"]
REPORT_KEYS = {
    "output", "model", "recipe", "float_size_bytes", "int8_size_bytes", "size_ratio",
    "calibration_seconds", "quantized_ops", "float_ops", "accuracy", "agreement",
    "latency_ms", "speedup", "onnx_weight_type", "simulated_only",
}
TINY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


    def broken():
        raise RuntimeError("no GPU here")


    def not_a_model():
        return "a model"
    """
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Random weights of the zoo model and of another architecture, a tiny model file and
    12x12 data for it (.npy for calibration, labelled .npz for evaluation)."""
    folder = tmp_path_factory.mktemp("quantize_inputs")
    torch.manual_seed(0)
    for name, arch in (("random", ZOO_MODEL), ("other", "resnet-fmnist")):
        state = get_zoo_model(arch).build().state_dict()
        save_file({k: v.contiguous() for k, v in state.items()}, folder / f"{name}.safetensors")
    (folder / "tiny.py").write_text(TINY)
    rng = np.random.default_rng(0)
    np.save(folder / "x.npy", rng.standard_normal((16, 1, 12, 12)).astype(np.float32))
    np.savez(folder / "xy.npz", x=rng.standard_normal((10, 1, 12, 12)).astype(np.float32),
             y=rng.integers(0, 10, 10))
    for name in ("calib28", "eval28"):
        np.save(folder / f"{name}.npy", rng.standard_normal((4, 1, 28, 28)).astype(np.float32))
    return folder


def _tiny(files: Path, out: Path, *extra: str) -> list[str]:
    return ["quantize", f"{files / 'tiny.py'}:build", "--calib", str(files / "x.npy"),
            "--eval", str(files / "xy.npz"), "--repeats", "3", "-o", str(out), *extra]


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_zoo_model_onnx_is_the_program_and_report_has_the_keys(files, tmp_path, capsys):
    out, program = tmp_path / "m.int8.onnx", tmp_path / "m.program.safetensors"
    argv = ["quantize", ZOO_MODEL, "--weights", str(files / "random.safetensors"), *QUICK,
            "-o", str(out), "--save-program", str(program), "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert REPORT_KEYS <= report.keys()
    assert report["output"] == str(out) and report["model"] == ZOO_MODEL
    assert report["recipe"] == "sym-per-channel-8-a8-mse"
    assert report["int8_size_bytes"] == out.stat().st_size
    assert report["size_ratio"] == report["float_size_bytes"] / out.stat().st_size > 2
    assert report["calibration"] == {"data": "fashion-mnist:train", "samples": 64}
    assert report["evaluation"] == {"data": "fashion-mnist:test", "samples": 64,
                                    "labelled": True}
    assert report["float_ops"] == 0 and report["quantized_ops"] == sum(
        report["op_counts"].values())
    assert set(report["accuracy"]) == {"float", "int8", "drop"}
    assert set(report["agreement"]) == {"top1", "top5", "top5_overlap", "sqnr_db",
                                        "kl_divergence"}
    lat = report["latency_ms"]
    assert lat["threads"] == 1 and lat["batch"] == 1 and lat["int8"]["repeats"] == 3
    assert report["speedup"] == pytest.approx(
        lat["float"]["median_ms"] / lat["int8"]["median_ms"])
    assert (out.stat().st_mode & 0o777) == 0o666 & ~_umask()
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name, program.name]
    onnx.checker.check_model(str(out))
    x = np.random.default_rng(1).standard_normal((8, 1, 28, 28)).astype(np.float32)
    expected = run_reference(load_program(program), x)
    assert np.array_equal(OrtSession(out).run(x), next(iter(expected.values())))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_factory_model_with_user_data_and_human_report(files, tmp_path):
    out = tmp_path / "tiny.onnx"
    result = subprocess.run([str(INTQ), *_tiny(files, out)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert text.startswith(f"tiny (factory weights) -> {out}\n")
    for expected in ("calibration  16 samples of file:", "10 samples of file:", "with labels",
                     "top-1 accuracy", "top-1 agreement", "logit SQNR", "latency",
                     "0 float ops", "ONNX         s8 weights" if _vnni() else "ONNX"):
        assert expected in text
    assert "Traceback" not in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    session = OrtSession(out)
    assert session.run(np.zeros((3, 1, 12, 12), np.float32)).shape == (3, 10)


def _vnni() -> bool:
    from intq.runtime.onnxruntime import cpu_has_vnni

    return bool(cpu_has_vnni())


def test_weight_only_is_simulated_and_writes_nothing(files, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = _tiny(files, tmp_path / "x.onnx", "--weight-only", "--json")
    argv.remove("-o")
    argv.remove(str(tmp_path / "x.onnx"))
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["simulated_only"] is True and report["output"] is None
    assert report["recipe"] == "sym-per-channel-8-weight-only"
    assert report["int8_size_bytes"] is None and report["latency_ms"] is None
    assert 0 <= report["agreement"]["top1"] <= 1 and report["accuracy"]["float"] is not None
    assert list(tmp_path.iterdir()) == []
    err = _error(capsys, _tiny(files, tmp_path / "x.onnx", "--weight-only"), code=2)
    assert "-o: weight-only quantization has no integer ONNX form" in err


def test_granularity_and_bits_shape_the_recipe(files, tmp_path, capsys):
    out = tmp_path / "w4.onnx"
    assert main(_tiny(files, out, "--per-tensor", "--w-bits", "4", "--observer", "minmax",
                      "--json")) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["recipe"] == "sym-per-layer-4-a8-minmax"
    assert report["weight_spec"] == "int4 sym narrow per-tensor minmax half_even"
    assert out.is_file()


@pytest.mark.parametrize("where", ["export", "rename"])
def test_ctrl_c_leaves_no_file(files, tmp_path, capsys, monkeypatch, where):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    if where == "export":
        monkeypatch.setattr(quantize_cli, "export_onnx", interrupt)
    else:  # the temp file is complete, the rename is interrupted
        monkeypatch.setattr(os, "replace", interrupt)
    assert main(_tiny(files, tmp_path / "out.onnx")) == 130
    assert capsys.readouterr().err.endswith("intq: interrupted\n")
    assert list(tmp_path.iterdir()) == []


def _error(capsys, argv, code=1) -> str:
    assert main(argv) == code
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("intq: error: ")
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    return captured.err


def test_bad_models_and_weights_are_one_line_errors(files, tmp_path, capsys):
    out = tmp_path / "out.onnx"
    tiny = files / "tiny.py"
    common = ["--calib", str(files / "x.npy"), "-o", str(out)]
    err = _error(capsys, ["quantize", f"{tiny}:not_a_model", *common])
    assert "returned str, not a torch.nn.Module" in err
    err = _error(capsys, ["quantize", f"{tiny}:broken", *common])
    assert f"model factory {tiny}:broken raised RuntimeError: no GPU here" in err
    err = _error(capsys, ["quantize", f"{files / 'x.npy'}:build", *common])
    assert "is not a Python file" in err
    zoo = ["quantize", ZOO_MODEL, "--calib", str(files / "calib28.npy"), "--eval",
           str(files / "eval28.npy"), "-o", str(out)]
    err = _error(capsys, [*zoo, "--weights", str(files / "other.safetensors")])
    assert "does not fit the model" in err and "missing tensors" in err
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    err = _error(capsys, [*zoo, "--weights", str(tmp_path / "module.pt")])
    assert "refusing to unpickle" in err
    np.save(tmp_path / "rgb.npy", np.zeros((4, 3, 12, 12), np.float32))
    err = _error(capsys, ["quantize", f"{tiny}:build", "--calib", str(tmp_path / "rgb.npy"),
                          "-o", str(out)])
    assert "fails on file:" in err and "inputs of shape (2, 3, 12, 12)" in err
    err = _error(capsys, [*zoo, "--calib", str(tmp_path / "rgb.npy")])
    assert "expected inputs float32 of shape (N, 1, 28, 28)" in err
    np.savez(tmp_path / "y.npz", x=np.zeros((2, 1, 12, 12), np.float32), y=np.array([0, 12]))
    err = _error(capsys, ["quantize", f"{tiny}:build", *common, "--eval", str(tmp_path / "y.npz")])
    assert "labels up to 12 but the model has only 10 classes" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["module.pt", "rgb.npy", "y.npz"]


def test_bad_flags_and_paths_fail_before_any_work(files, tmp_path, capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded")

    monkeypatch.setattr(quantize_cli, "load_model_spec", no_model)
    base = ["quantize", f"{files / 'tiny.py'}:build", "--calib", str(files / "x.npy")]
    err = _error(capsys, [*base, "-o", str(tmp_path / "missing" / "m.onnx")])
    assert f"output directory {tmp_path / 'missing'} does not exist" in err
    assert "unknown recipe 'sym-8'" in _error(capsys, [*base, "--recipe", "sym-8"], code=2)
    assert "--w-bits: must be in 2..8, got 1" in _error(capsys, [*base, "--w-bits", "1"], 2)
    assert "--a-bits: must be in 2..8" in _error(capsys, [*base, "--a-bits", "16"], code=2)
    assert "must end in .onnx" in _error(capsys, [*base, "-o", str(tmp_path / "m.txt")], 2)
    weights = str(files / "random.safetensors")
    err = _error(capsys, [*base, "--weights", weights, "-o", str(tmp_path / "m.onnx"),
                          "--save-program", weights])
    assert "is an input file" in err
    err = _error(capsys, ["quantize", f"{files / 'tiny.py'}:build"], code=2)
    assert "give --input-shape C,H,W" in err
    err = _error(capsys, ["quantize", f"{files / 'tiny.py'}:build", "--input-shape", "1,5,5"], 2)
    assert "give --calib DATA: no zoo dataset has 1x5x5 inputs" in err
    err = _error(capsys, ["quantize", ZOO_MODEL, "--input-shape", "3,28,28"], code=2)
    assert "takes inputs of shape 1x28x28" in err
    assert list(tmp_path.iterdir()) == []


def test_broken_pipe_exits_quietly(files, monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError

        def flush(self):
            raise BrokenPipeError

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["zoo", "--json"]) == 141
    assert capsys.readouterr().err == ""


def test_crops_calibrate_on_random_crops_of_a_folder(tmp_path, capsys):
    from intq.cli import main

    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 50), dtype=np.uint8)).save(photos / f"{i}.png")
    out = tmp_path / "m.onnx"
    argv = ["quantize", "mobilenet-v2-fmnist", "--calib", str(photos), "--crops", "12",
            "--calib-size", "2", "--eval-size", "16", "--repeats", "1", "--json", "-o", str(out)]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calibration"] == {"data": f"folder:{photos} (12 random crops)", "samples": 12}
    assert out.is_file()
