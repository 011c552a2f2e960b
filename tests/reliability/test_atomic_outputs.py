"""Atomic and deterministic outputs: Ctrl-C or a full disk in the middle of writing leaves no
partial or temporary file and never touches what was there; the same inputs and seed give
byte-identical files, in one process and across processes (different hash seeds)."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from intq.convert.serialize import load_program, save_program
from intq.convert.synthetic import random_cnn
from intq.export import export_onnx

from .conftest import ZOO_MODEL, assert_one_line_error, run_cli, snapshot

INTQ = Path(sys.executable).with_name("intq")


class _FailingWrite:
    """A file whose ``write`` stores the first half of the bytes, then raises ``exc``."""

    def __init__(self, file, exc: BaseException):
        self._file, self._exc = file, exc

    def write(self, data) -> int:
        self._file.write(data[: len(data) // 2])
        self._file.flush()
        raise self._exc

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.close()

    def __getattr__(self, name):
        return getattr(self._file, name)


def _fail_writes_to(monkeypatch, name: str, exc: BaseException) -> None:
    """Writes through ``os.fdopen`` to the temporary file of output ``name`` (intq writes
    ``.<name>.<random>.tmp`` next to it) fail halfway with ``exc``."""
    real = os.fdopen

    def fdopen(fd, *args, **kwargs):
        file = real(fd, *args, **kwargs)
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{name}."):
            return _FailingWrite(file, exc)
        return file

    monkeypatch.setattr(os, "fdopen", fdopen)


def _quantize(inputs: Path, out: Path, *extra) -> list:
    return ["quantize", f"{inputs}/tiny.py:build", "--calib", inputs / "x12.npy", "--eval",
            inputs / "xy12.npz", "--repeats", "2", "-o", out / "m.onnx", *extra]


def _qat(inputs: Path, out: Path) -> list:
    return ["qat", ZOO_MODEL, "--weights", inputs / "v1.safetensors", "--data",
            inputs / "xy28.npz", "--steps", "2", "--batch-size", "16", "-o", out / "q.onnx"]


@pytest.fixture(scope="module")
def clean_outputs(inputs, tmp_path_factory) -> Path:
    """The files of one uninterrupted ``intq quantize --save-program`` run."""
    out = tmp_path_factory.mktemp("clean")
    from intq.cli import main

    assert main([str(a) for a in _quantize(inputs, out, "--save-program",
                                            out / "p.safetensors")]) == 0
    return out


def test_ctrl_c_while_writing_the_onnx_leaves_nothing(inputs, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _fail_writes_to(monkeypatch, "m.onnx", KeyboardInterrupt())
    run = run_cli(_quantize(inputs, tmp_path), capsys)
    assert run.code == 130 and run.err.endswith("intq: interrupted\n")
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_keeps_the_previous_output_intact(inputs, tmp_path, capsys, monkeypatch):
    (tmp_path / "m.onnx").write_bytes(b"the previous model")
    _fail_writes_to(monkeypatch, "m.onnx", KeyboardInterrupt())
    assert run_cli(_quantize(inputs, tmp_path), capsys).code == 130
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == b"the previous model"


def test_ctrl_c_while_writing_the_program_keeps_a_complete_onnx(inputs, clean_outputs,
                                                                 tmp_path, capsys, monkeypatch):
    """Each file is complete or absent: the ONNX model (written first) is whole."""
    _fail_writes_to(monkeypatch, "p.safetensors", KeyboardInterrupt())
    run = run_cli(_quantize(inputs, tmp_path, "--save-program", tmp_path / "p.safetensors"),
                  capsys)
    assert run.code == 130
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
    assert (tmp_path / "m.onnx").read_bytes() == (clean_outputs / "m.onnx").read_bytes()


def test_full_disk_is_one_line_and_leaves_nothing(inputs, tmp_path, capsys, monkeypatch):
    _fail_writes_to(monkeypatch, "m.onnx", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    before = snapshot(inputs)
    run = run_cli(_quantize(inputs, tmp_path), capsys)
    assert_one_line_error(run, 1, f"cannot write {tmp_path}/m.onnx: No space left on device")
    assert list(tmp_path.iterdir()) == [] and snapshot(inputs) == before


def test_full_disk_while_writing_the_program(inputs, tmp_path, capsys, monkeypatch):
    _fail_writes_to(monkeypatch, "p.safetensors", OSError(errno.ENOSPC, "No space left"))
    run = run_cli(_quantize(inputs, tmp_path, "--save-program", tmp_path / "p.safetensors"),
                  capsys)
    assert_one_line_error(run, 1, f"cannot write {tmp_path}/p.safetensors: No space left")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_qat_ctrl_c_while_writing_the_onnx(inputs, tmp_path, capsys, monkeypatch):
    _fail_writes_to(monkeypatch, "q.onnx", KeyboardInterrupt())
    assert run_cli(_qat(inputs, tmp_path), capsys).code == 130
    assert list(tmp_path.iterdir()) == []


def test_qat_ctrl_c_while_writing_the_checkpoint(inputs, tmp_path, capsys, monkeypatch):
    _fail_writes_to(monkeypatch, "q.safetensors", KeyboardInterrupt())
    assert run_cli(_qat(inputs, tmp_path), capsys).code == 130
    assert [p.name for p in tmp_path.iterdir()] == ["q.onnx"]


@pytest.mark.parametrize("writer", ["export_onnx", "save_program"])
def test_library_writers_are_atomic(writer, tmp_path, monkeypatch):
    program = random_cnn(0)
    path = tmp_path / ("m.onnx" if writer == "export_onnx" else "p.safetensors")
    _fail_writes_to(monkeypatch, path.name, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        export_onnx(program, path) if writer == "export_onnx" else save_program(program, path)
    assert list(tmp_path.iterdir()) == []


def test_same_inputs_and_seed_give_identical_files(inputs, clean_outputs, tmp_path, capsys):
    """In this process: the ONNX model and the IntProgram file of a second run are identical
    to the first run's; so are QAT's ONNX model and checkpoint over two runs."""
    assert run_cli(_quantize(inputs, tmp_path, "--save-program", tmp_path / "p.safetensors"),
                   capsys).code == 0
    for name in ("m.onnx", "p.safetensors"):
        assert (tmp_path / name).read_bytes() == (clean_outputs / name).read_bytes(), name
    qat = [tmp_path / "qat1", tmp_path / "qat2"]
    for folder in qat:
        folder.mkdir()
        assert run_cli(_qat(inputs, folder), capsys).code == 0
    for name in ("q.onnx", "q.safetensors"):
        assert (qat[0] / name).read_bytes() == (qat[1] / name).read_bytes(), name


def test_identical_files_across_processes(inputs, clean_outputs, tmp_path):
    """Two real ``intq quantize`` processes with different hash seeds (run side by side) write
    the same bytes as this process did; safetensors' metadata order used to differ."""
    runs = []
    for seed in ("1", "2"):
        out = tmp_path / seed
        out.mkdir()
        argv = [str(a) for a in _quantize(inputs, out, "--save-program", out / "p.safetensors")]
        env = {**os.environ, "PYTHONHASHSEED": seed}
        runs.append(subprocess.Popen([str(INTQ), *argv], env=env, cwd=out,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for process in runs:
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    for name in ("m.onnx", "p.safetensors"):
        expected = (clean_outputs / name).read_bytes()
        assert (tmp_path / "1" / name).read_bytes() == expected, name
        assert (tmp_path / "2" / name).read_bytes() == expected, name
    assert load_program(tmp_path / "1" / "p.safetensors") == load_program(
        clean_outputs / "p.safetensors")
