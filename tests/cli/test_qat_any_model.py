"""``intq qat`` on a user's model file and array data: distillation without labels, valid
JSON when the factory prints, checkpoint + resume equal to an uninterrupted run, nothing
written by an interrupted run, and two torchrun processes equal to one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import intq.cli
import intq.cli.qat as qat_cli
from intq.qat import load_checkpoint

MODEL_FILE = '''
import torch
from torch import nn

def build():
    print("building the tiny net")  # user code printing to stdout
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
'''
# 72 samples: 8 held out, 64 = 4 global batches of 16 per epoch (equal shares for 2 ranks)
TRAIN = ["--holdout", "8", "--epochs", "2", "--batch-size", "16", "--lr", "0.05"]
SRC = str(Path(intq.__file__).resolve().parents[1])


@pytest.fixture(autouse=True)
def cli_env(monkeypatch):
    monkeypatch.setattr(intq.cli, "_COMMANDS", ("qat",))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "tiny.py").write_text(MODEL_FILE)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((72, 3, 12, 12)).astype(np.float32)
    np.save(folder / "x.npy", x)
    np.savez(folder / "xy.npz", x=x, y=rng.integers(0, 5, 72))
    return folder


def _qat(files: Path, out: Path, *extra: str, data: str = "x.npy") -> list[str]:
    return ["qat", f"{files / 'tiny.py'}:build", "--data", str(files / data), *TRAIN,
            "-o", str(out), *extra]


def _states_equal(a: Path, b: Path, **tolerance) -> None:
    left, right = load_file(a), load_file(b)
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], msg=key, **tolerance)


def test_json_stays_valid_when_the_factory_prints(user_files, tmp_path, capsys):
    assert intq.cli.main(_qat(user_files, tmp_path / "t.onnx", "--json")) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert "building the tiny net" in captured.err
    assert summary["loss"] == "distillation (T=1)" and summary["float_accuracy"] is None
    assert (summary["train_samples"], summary["holdout_samples"]) == (64, 8)
    assert 0 <= summary["agreement"]["onnx"]["top1"] <= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.onnx", "t.safetensors"]


@pytest.mark.parametrize("extra, loss", [((), "cross-entropy"),
                                         (("--distill", "--temperature", "2"),
                                          "distillation (T=2)")])
def test_labels_give_cross_entropy_unless_distilling(user_files, tmp_path, capsys, extra, loss):
    argv = _qat(user_files, tmp_path / "t.onnx", "--json", "--steps", "2", *extra,
                data="xy.npz")
    assert intq.cli.main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["loss"] == loss and 0 <= summary["onnx_accuracy"] <= 1


def _interrupt_at(monkeypatch, stop: int) -> None:
    """Ctrl-C after step ``stop`` (as KeyboardInterrupt from the progress callback)."""
    class Stop:
        def __enter__(self):
            def on_step(p):
                if p.step == stop:
                    raise KeyboardInterrupt
            return on_step

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(qat_cli, "_progress", lambda enabled: Stop())


@pytest.mark.parametrize("start", [(), ("--start", "adaround", "--adaround-iters", "20"),
                                   ("--start", "ptq", "--optimizer", "adam", "--learn-scales",
                                    "--lr", "0.001")])
def test_interrupted_run_writes_nothing_and_resume_equals_uninterrupted(
        user_files, tmp_path, monkeypatch, capsys, start):
    whole, resumed = tmp_path / "whole.onnx", tmp_path / "resumed.onnx"
    ckpt = tmp_path / "ck.safetensors"
    assert intq.cli.main(_qat(user_files, whole, *start)) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 7)
        argv = _qat(user_files, resumed, *start, "--checkpoint", str(ckpt),
                    "--checkpoint-every", "3")
        assert intq.cli.main(argv) == 130
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors", "whole.onnx",
                                                          "whole.safetensors"]
    assert int(load_checkpoint(ckpt)[0]["step"]) == 6  # the last complete checkpoint
    assert intq.cli.main(_qat(user_files, resumed, *start, "--resume", str(ckpt))) == 0
    _states_equal(whole.with_suffix(".safetensors"), resumed.with_suffix(".safetensors"),
                  rtol=0, atol=0)
    assert whole.read_bytes() == resumed.read_bytes()
    warned = "warning: --optimizer adam moves every weight" in capsys.readouterr().err
    assert warned == ("adam" in start)  # 8-bit weights: Adam is flagged


@pytest.mark.parametrize("start", ["ptq", "adaround"])
def test_a_ptq_start_trains_the_ptq_model_closer_to_float(user_files, tmp_path, capsys, start):
    """The untrained PTQ model (lr ~0) against the trained one, both from the same start."""
    kl = {}
    for lr in ("1e-12", "0.05"):
        argv = _qat(user_files, tmp_path / f"{lr}.onnx", "--json", "--start", start,
                    "--adaround-iters", "20", "--w-bits", "2", "--weight-ranges", "mse",
                    "--optimizer", "sgd", "--lr", lr)
        assert intq.cli.main(argv) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["start"] == start
        kl[lr] = summary["agreement"]["onnx"]["kl_divergence"]
    assert kl["0.05"] < kl["1e-12"], kl


def test_resume_refuses_a_checkpoint_of_other_settings(user_files, tmp_path, capsys):
    ckpt = tmp_path / "ck.safetensors"
    assert intq.cli.main(_qat(user_files, tmp_path / "a.onnx", "--steps", "2",
                              "--checkpoint", str(ckpt))) == 0
    argv = _qat(user_files, tmp_path / "b.onnx", "--steps", "2", "--lr", "0.01", "--resume",
                str(ckpt))
    assert intq.cli.main(argv) == 1
    assert "--lr 0.05 (now 0.01)" in capsys.readouterr().err
    assert not (tmp_path / "b.onnx").exists()


def test_two_torchrun_processes_equal_one(user_files, tmp_path):
    one, two = tmp_path / "one.onnx", tmp_path / "two.onnx"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    for out, launcher in ((one, [sys.executable, "-m", "intq.cli"]),
                          (two, [str(torchrun), "--standalone", "--nproc_per_node", "2",
                                 "-m", "intq.cli"])):
        done = subprocess.run([*launcher, *_qat(user_files, out, "--json")], env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)  # rank 0 alone printed
    assert summary["processes"] == 2
    _states_equal(one.with_suffix(".safetensors"), two.with_suffix(".safetensors"),
                  rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("extra, code, message", [
    (("--checkpoint-every", "2"), 2, "--checkpoint-every needs --checkpoint FILE"),
    (("--start", "ptq", "--bn-freeze", "0"), 2, "--start ptq takes no --bn-freeze"),
    (("--weight-ranges", "mse"), 2, "--weight-ranges mse needs --start ptq or adaround"),
    (("--resume", "missing.safetensors"), 1, "checkpoint missing.safetensors does not exist"),
    (("--resume", "x.npy"), 1, "checkpoint x.npy is not a valid safetensors file"),
])
def test_bad_training_options_are_one_line_errors(user_files, tmp_path, capsys, monkeypatch,
                                                  extra, code, message):
    monkeypatch.chdir(tmp_path)
    np.save(tmp_path / "x.npy", np.zeros(3, np.float32))
    assert intq.cli.main(_qat(user_files, tmp_path / "t.onnx", *extra)) == code
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]
