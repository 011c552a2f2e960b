"""Safe loading: a pickle that would run code is refused and its code never runs (checked with
real payloads that create a file); .npy/.npz are never unpickled; ONNX files are validated
before use. Every refusal is one line on stderr, exit code 1, and writes nothing."""

import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from .conftest import ZOO_MODEL, assert_one_line_error, run_cli, snapshot

INTQ = Path(sys.executable).with_name("intq")


class _System:
    """Unpickling calls ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    """Unpickling calls ``exec(code)``."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def _payloads(folder: Path, marker: Path) -> dict[str, Path]:
    """Files whose unpickling creates ``marker``, in every form intq might be handed."""
    touch = _System(f"touch {marker}")
    write = _Exec(f"open({str(marker)!r}, 'w').write('pwned')")
    files = {name: folder / name for name in (
        "evil.pt", "evil_legacy.pt", "evil_exec.pth", "evil.bin", "evil.safetensors",
        "evil_object.npy", "evil_object.npz", "evil_pickle.npy", "evil_labels.npz")}
    torch.save({"weight": touch}, files["evil.pt"])
    torch.save({"weight": touch}, files["evil_legacy.pt"], _use_new_zipfile_serialization=False)
    torch.save({"state_dict": {"weight": write}}, files["evil_exec.pth"])
    files["evil.bin"].write_bytes(pickle.dumps(touch, protocol=2))
    files["evil.safetensors"].write_bytes(files["evil.pt"].read_bytes())
    np.save(files["evil_object.npy"], np.array([touch], dtype=object), allow_pickle=True)
    np.savez(files["evil_object.npz"], x=np.array([touch], dtype=object))
    files["evil_pickle.npy"].write_bytes(pickle.dumps(touch))
    np.savez(files["evil_labels.npz"], x=np.zeros((4, 1, 12, 12), np.float32),
             y=np.array([touch] * 4, dtype=object))
    return files


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evil")
    marker = folder / "PWNED"
    return SimpleNamespace(folder=folder, marker=marker, **{
        name.replace(".", "_"): path for name, path in _payloads(folder, marker).items()})


def test_the_payloads_are_live(tmp_path):
    """Loaded the unsafe way, each payload really runs: the refusals below are not vacuous."""
    marker = tmp_path / "ran"
    files = _payloads(tmp_path, marker)
    for name, load in (("evil.pt", lambda p: torch.load(p, weights_only=False)),
                       ("evil_exec.pth", lambda p: torch.load(p, weights_only=False)),
                       ("evil.bin", lambda p: pickle.loads(p.read_bytes())),
                       ("evil_object.npz", lambda p: np.load(p, allow_pickle=True)["x"])):
        marker.unlink(missing_ok=True)
        load(files[name])
        assert marker.exists(), name


def _weights_cases():
    tiny = ["quantize", "{i}/tiny.py:build", "--calib", "{i}/x12.npy", "-o", "{o}/m.onnx"]
    zoo = ["quantize", ZOO_MODEL, "--calib", "{i}/x28.npy", "-o", "{o}/m.onnx"]
    refused = "refusing to unpickle"
    return [
        pytest.param([*tiny, "--weights", "{e}/evil.pt"], refused + " {e}/evil.pt: it needs "
                     "code (posix.system)", id="quantize-pt-os.system"),
        pytest.param([*tiny, "--weights", "{e}/evil_legacy.pt"], refused, id="quantize-legacy-pt"),
        pytest.param([*tiny, "--weights", "{e}/evil_exec.pth"], "needs code (exec)",
                     id="quantize-pth-exec"),
        pytest.param([*tiny, "--weights", "{e}/evil.bin"], "needs code (posix.system)",
                     id="quantize-raw-pickle"),
        pytest.param([*tiny, "--weights", "{e}/evil.safetensors"], "not a valid safetensors "
                     "file", id="quantize-pickle-named-safetensors"),
        pytest.param([*zoo, "--weights", "{e}/evil.pt"], refused, id="quantize-zoo-pt"),
        pytest.param(["eval", ZOO_MODEL, "--weights", "{e}/evil.pt"], "give a .safetensors file "
                     "(intq never unpickles .pt/.pth)", id="eval-zoo-pt"),
        pytest.param(["eval", ZOO_MODEL, "--weights", "{e}/evil.safetensors"], "not a valid "
                     "safetensors file", id="eval-zoo-pickle-named-safetensors"),
        pytest.param(["eval", "{e}/good.onnx", "--data", "{i}/x12.npy", "--reference",
                      "{i}/tiny.py:build", "--weights", "{e}/evil.pt"], refused,
                     id="eval-onnx-reference-pt"),
        pytest.param(["qat", ZOO_MODEL, "--weights", "{e}/evil.pt", "-o", "{o}/q.onnx"],
                     "refusing to unpickle", id="qat-pt"),
        pytest.param(["qat", ZOO_MODEL, "--weights", "{e}/evil.safetensors", "-o", "{o}/q.onnx"],
                     "not a valid safetensors file", id="qat-pickle-named-safetensors"),
    ]


def _data_cases():
    tiny = ["quantize", "{i}/tiny.py:build", "--input-shape", "1,12,12", "-o", "{o}/m.onnx"]
    objects = "holds Python objects, which intq never unpickles"
    return [
        pytest.param([*tiny, "--calib", "{e}/evil_object.npy"], objects, id="npy-object-array"),
        pytest.param([*tiny, "--calib", "{e}/evil_object.npz"], objects, id="npz-object-array"),
        pytest.param([*tiny, "--calib", "{e}/evil_pickle.npy"], "not a NumPy .npy/.npz file "
                     "(intq never unpickles)", id="raw-pickle-named-npy"),
        pytest.param([*tiny, "--calib", "{i}/x12.npy", "--eval", "{e}/evil_labels.npz"], objects,
                     id="npz-object-labels"),
        pytest.param(["eval", ZOO_MODEL, "--weights", "{i}/v1.safetensors", "--data",
                      "{e}/evil_object.npz"], objects, id="eval-npz-object-array"),
        pytest.param(["qat", ZOO_MODEL, "--weights", "{i}/v1.safetensors", "--data",
                      "{e}/evil_labels.npz", "-o", "{o}/q.onnx"], objects,
                     id="qat-npz-object-labels"),
    ]


def _expand(items, **folders) -> list[str]:
    return [item.format(**folders) for item in items]


@pytest.fixture(scope="module")
def good_onnx(evil):
    """A float ONNX classifier of (N, 1, 12, 12) inputs, next to the payloads."""
    _classifier(evil.folder / "good.onnx", [None, 1, 12, 12])
    return evil.folder / "good.onnx"


@pytest.mark.parametrize("argv, message", _weights_cases() + _data_cases())
def test_code_in_pickles_never_runs(argv, message, evil, good_onnx, inputs, tmp_path, capsys,
                                    monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = snapshot(inputs, evil.folder, tmp_path)
    folders = {"i": inputs, "e": evil.folder, "o": tmp_path}
    run = run_cli(_expand(argv, **folders), capsys)
    assert_one_line_error(run, 1, message.format(**folders))
    assert not evil.marker.exists()
    assert snapshot(inputs, evil.folder, tmp_path) == before


def test_console_script_refuses_a_malicious_pickle(evil, inputs, tmp_path):
    """The real ``intq`` executable: exit code 1, one line, no traceback, no file created."""
    result = subprocess.run(
        [str(INTQ), "quantize", f"{inputs}/tiny.py:build", "--weights", str(evil.evil_pt),
         "--calib", str(inputs / "x12.npy"), "-o", str(tmp_path / "m.onnx")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == (f"intq: error: refusing to unpickle {evil.evil_pt}: it needs code "
                             "(posix.system); save model.state_dict() with torch.save, or a "
                             ".safetensors file\n")
    assert not evil.marker.exists() and list(tmp_path.iterdir()) == []


# -- ONNX files handed to intq eval / intq bench -------------------------------------------

def _model(path: Path, inputs: list, nodes: list, initializers=(), output=(None, 10),
           domains=()) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(
        "y", inputs[0].type.tensor_type.elem_type, list(output))],
        initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    *(helper.make_opsetid(d, 1) for d in domains)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _input(name: str, shape: list, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def _classifier(path: Path, shape: list) -> Path:
    """Flatten + MatMul to 10 logits."""
    features = int(np.prod(shape[1:]))
    w = numpy_helper.from_array(np.ones((features, 10), np.float32), "w")
    return _model(path, [_input("x", shape)], [helper.make_node("Flatten", ["x"], ["f"]),
                                               helper.make_node("MatMul", ["f", "w"], ["y"])], [w])


def _external(path: Path, location: str) -> Path:
    """A model whose weight is 'external data' at ``location`` (outside the model's folder)."""
    w = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in (("location", location), ("length", "16")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    return _model(path, [_input("x", [None, 4])], [helper.make_node("Add", ["x", "w"], ["y"])],
                  [w], output=(None, 4))


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory, good_onnx):
    folder = tmp_path_factory.mktemp("onnx")
    good = good_onnx.read_bytes()
    (folder / "text.onnx").write_text("this is not a model\n")
    (folder / "random.onnx").write_bytes(np.random.default_rng(0).bytes(2000))
    (folder / "empty.onnx").write_bytes(b"")
    (folder / "truncated.onnx").write_bytes(good[: len(good) // 2])
    _classifier(folder / "rgb.onnx", [None, 3, 5, 5])
    _model(folder / "two_inputs.onnx", [_input("a", [None, 1, 12, 12]),
                                        _input("b", [None, 1, 12, 12])],
           [helper.make_node("Add", ["a", "b"], ["y"])], output=(None, 1, 12, 12))
    _model(folder / "dynamic_c.onnx", [_input("x", [None, None, 12, 12])],
           [helper.make_node("Identity", ["x"], ["y"])], output=(None, None, 12, 12))
    _model(folder / "int_input.onnx", [_input("x", [None, 1, 12, 12], TensorProto.INT64)],
           [helper.make_node("Identity", ["x"], ["y"])], output=(None, 1, 12, 12))
    _model(folder / "custom_op.onnx", [_input("x", [None, 1, 12, 12])],
           [helper.make_node("Steal", ["x"], ["y"], domain="evil.ops")], domains=["evil.ops"])
    _external(folder / "external_absolute.onnx", "/etc/passwd")
    _external(folder / "external_relative.onnx", "../../../../etc/passwd")
    return folder


_INVALID = "not a valid ONNX model: {f}"
ONNX_CASES = [  # (command, file, message); {f} is the file
    *((command, name, _INVALID) for command in ("eval", "bench")
      for name in ("text.onnx", "random.onnx", "empty.onnx", "truncated.onnx",
                   "external_absolute.onnx", "external_relative.onnx", "custom_op.onnx")),
    ("eval", "rgb.onnx", "expected inputs float32 of shape (N, 3, 5, 5), got float32 of shape "
     "(16, 1, 12, 12)"),
    ("eval", "two_inputs.onnx", "the model has 2 inputs; intq needs exactly one"),
    ("eval", "dynamic_c.onnx", "input shape ?x?x12x12 is not an image batch (N, C, H, W) with "
     "fixed C, H, W"),
    ("bench", "dynamic_c.onnx", "dynamic axis 1 besides the batch"),
    ("eval", "int_input.onnx", "ONNX Runtime failed on {f}"),
    ("bench", "int_input.onnx", "only float inputs"),
]


@pytest.mark.parametrize("command, name, message", ONNX_CASES,
                         ids=[f"{c}-{n.removesuffix('.onnx')}" for c, n, _ in ONNX_CASES])
def test_onnx_files_are_validated(command, name, message, onnx_files, inputs, tmp_path, capsys,
                                  monkeypatch):
    """Not ONNX, truncated, external data outside the model's folder (/etc/passwd), unknown
    ops, the wrong input shape, rank or type: one line, exit code 1, nothing written."""
    monkeypatch.chdir(tmp_path)
    path = onnx_files / name
    argv = (["eval", path, "--data", inputs / "x12.npy"] if command == "eval" else
            ["bench", path, "--repeats", "1", "--warmup", "0"])
    before = snapshot(onnx_files, inputs, tmp_path)
    assert_one_line_error(run_cli(argv, capsys), 1, message.format(f=path))
    assert snapshot(onnx_files, inputs, tmp_path) == before
