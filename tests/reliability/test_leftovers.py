"""What runs leave behind (issue 16): temporaries of killed runs are removed by the next one,
SIGTERM cleans up like Ctrl-C, every output gets the same mode (0666 minus the umask), a full
disk while writing safetensors is one line, and a diverged training writes nothing."""

import errno
import os
import signal
import tempfile
import time

import pytest
import torch

from intq.cli import train as train_cli
from intq.outputs import clean_stale, temporary_folder, write_atomic
from intq.zoo.registry import MODEL_ZOO, TrainResult

from .conftest import ZOO_MODEL, assert_one_line_error, run_cli
from .test_atomic_outputs import _fail_writes_to, _qat, _quantize

_DEAD = 999_999_999  # above Linux's pid_max: never a running process


@pytest.fixture
def private_tmp(tmp_path, monkeypatch):
    """The temporary directory of this test (where intq-float-* folders go)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_temporaries_of_killed_writes_are_removed_by_the_next_run(inputs, tmp_path,
                                                                  private_tmp, capsys):
    """SIGKILL halfway through a write leaves '.m.onnx.<pid>-<random>.tmp' (and a killed run's
    intq-float-<pid>-* folder); the next run removes those of dead processes only."""
    out = tmp_path / "out"
    out.mkdir()
    stale = [out / f".m.onnx.{_DEAD}-k1ll3d_x.tmp", private_tmp / f"intq-float-{_DEAD}-abcd1234"]
    kept = [out / f".m.onnx.{os.getppid()}-alive123.tmp", out / f".n.onnx.{_DEAD}-other123.tmp",
            out / ".m.onnx.notes.tmp", out / f".m.onnx.{_DEAD}-mine.bak",
            private_tmp / f"intq-float-{os.getppid()}-live1234"]
    for path in stale + kept:
        path.mkdir() if "intq-float" in path.name else path.write_bytes(b"half a model")
    assert run_cli(_quantize(inputs, out), capsys).code == 0
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert sorted(p.name for p in private_tmp.iterdir()) == [kept[-1].name]


def test_library_writers_clean_up_too(tmp_path):
    (tmp_path / f".w.safetensors.{_DEAD}-abcdefgh.tmp").write_bytes(b"partial")
    write_atomic(tmp_path / "w.safetensors", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    assert clean_stale(tmp_path, ".w.safetensors.") == []


def test_sigterm_is_handled_like_ctrl_c(inputs, tmp_path, private_tmp, capsys, monkeypatch):
    """SIGTERM while the float model is exported into intq-float-<pid>-*: exit 143, one
    'intq: terminated' line, no folder left in the temporary directory, no output."""
    from intq.cli import quantize

    seen = []

    def terminated(model, example, path):
        seen.append(path.parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler raises before this ends

    monkeypatch.setattr(quantize, "_float_onnx", terminated)
    handler = signal.getsignal(signal.SIGTERM)
    start = time.monotonic()
    run = run_cli(_quantize(inputs, tmp_path), capsys)
    assert run.code == 143 and run.err.endswith("intq: terminated\n"), run
    assert time.monotonic() - start < 25
    assert seen and seen[0].name.startswith(f"intq-float-{os.getpid()}-")
    assert list(private_tmp.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert signal.getsignal(signal.SIGTERM) is handler  # restored after the run


def test_sigterm_while_writing_leaves_no_temporary(inputs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()

    real = os.fsync

    def fsync(fd):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    run = run_cli(_quantize(inputs, out), capsys)
    assert run.code == 143 and list(out.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_every_output_gets_the_same_mode(umask, inputs, tmp_path, capsys, monkeypatch):
    """quantize -o and --save-program, qat's ONNX and checkpoint, train's weights: all
    0666 & ~umask (qat and --save-program used to get 0600)."""
    monkeypatch.setattr(train_cli, "train_zoo_model", _fake_training(finite=True))
    old = os.umask(umask)
    try:
        assert run_cli(_quantize(inputs, tmp_path, "--save-program",
                                 tmp_path / "p.safetensors"), capsys).code == 0
        assert run_cli(_qat(inputs, tmp_path), capsys).code == 0
        assert run_cli(["train", ZOO_MODEL, "-o", tmp_path / "w.safetensors"], capsys).code == 0
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["m.onnx", "p.safetensors", "q.onnx", "q.safetensors",
                                   "w.safetensors"], 0o666 & ~umask)
    with temporary_folder("intq-mode-") as folder:
        assert folder.name.startswith(f"intq-mode-{os.getpid()}-")


def test_full_disk_while_writing_the_qat_checkpoint(inputs, tmp_path, capsys, monkeypatch):
    """Was a SafetensorError traceback; now one line, and the ONNX model (written first) is
    complete."""
    _fail_writes_to(monkeypatch, "q.safetensors", OSError(errno.ENOSPC, "No space left"))
    run = run_cli(_qat(inputs, tmp_path), capsys)
    assert_one_line_error(run, 1, f"cannot write {tmp_path}/q.safetensors: No space left")
    assert [p.name for p in tmp_path.iterdir()] == ["q.onnx"]


def test_full_disk_while_writing_trained_weights(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train_cli, "train_zoo_model", _fake_training(finite=True))
    _fail_writes_to(monkeypatch, "w.safetensors", OSError(errno.ENOSPC, "No space left"))
    run = run_cli(["train", ZOO_MODEL, "-o", tmp_path / "w.safetensors"], capsys)
    assert_one_line_error(run, 1, f"cannot write {tmp_path}/w.safetensors: No space left")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_training_that_diverges_writes_nothing(value, tmp_path, capsys, monkeypatch):
    """Exit 0 with NaN weights before; now exit 1 and no file (the training is replaced by
    one that returns a model with a non-finite weight, to isolate the check)."""
    monkeypatch.setattr(train_cli, "train_zoo_model", _fake_training(finite=False, bad=value))
    run = run_cli(["train", ZOO_MODEL, "-o", tmp_path / "w.safetensors"], capsys)
    assert_one_line_error(run, 1, "training diverged: 1 weight tensor(s) hold NaN or Inf",
                          "nothing written; lower --lr")
    assert list(tmp_path.iterdir()) == []


def _fake_training(*, finite: bool, bad: float = float("nan")):
    def train_zoo_model(name, **kwargs):
        torch.manual_seed(0)
        model = MODEL_ZOO[name].build().eval()
        if not finite:
            with torch.no_grad():
                next(model.parameters()).view(-1)[0] = bad
        return TrainResult(model, MODEL_ZOO[name].recipe, 10, 0.5, 0.5, 0.1)

    return train_zoo_model
