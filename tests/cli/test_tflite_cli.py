"""``intq quantize -o OUT.tflite`` writes the IntProgram as LiteRT runs it; ``intq eval`` and
``intq bench`` on .tflite files: LiteRT with XNNPACK or, with --ref-kernels, its reference
kernels (whose logits are the reference interpreter's); bad files are one-line errors."""

import json
import textwrap

import numpy as np
import pytest

from intq.cli import main
from intq.convert.serialize import load_program
from intq.convert.synthetic import RandomNet
from intq.export.tflite import export_tflite
from intq.runtime import LiteRtSession, run_reference
from intq.zoo import load_fashion_mnist


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small Fashion-MNIST-shaped classifier with float logits, and its program."""
    net = RandomNet(0, "int8")
    x = net.input((None, 1, 28, 28))
    c = net.conv(net.conv(x, 8, 3, stride=2), 16, 3, stride=2)
    g = net.pooled(net.b.global_avg_pool, c)
    program = net.build(net.linear(net.shared(net.b.flatten(g), g), 10, float_output=True))
    path = tmp_path_factory.mktemp("tflite") / "m.tflite"
    export_tflite(program, path)
    return path, program


def _json(capsys, argv):
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_with_reference_kernels_gives_the_reference_logits(model, capsys):
    path, program = model
    out = _json(capsys, ["eval", str(path), "--data", "fashion-mnist", "--n", "32",
                         "--ref-kernels"])
    assert out["kind"] == "tflite" and out["runtime"] == "litert-ref"
    x = load_fashion_mnist("test").x[:32].numpy()
    logits = run_reference(program, x, mode="fixed_point")[program.outputs[0]]
    labels = load_fashion_mnist("test").y[:32].numpy()
    assert out["correct"] == int((logits.argmax(1) == labels).sum())
    xnn = _json(capsys, ["eval", str(path), "--data", "fashion-mnist", "--n", "32"])
    assert xnn["runtime"] == "litert" and xnn["samples"] == 32


def test_bench_times_tflite_against_itself(model, capsys):
    path = str(model[0])
    out = _json(capsys, ["bench", path, "--vs", path, "--repeats", "3", "--warmup", "1"])
    assert [m["runtime"] for m in out["models"]] == ["litert"] * 2
    assert all(m["median_ms"] > 0 for m in out["models"]) and out["speedup"] > 0


def test_bad_files_are_one_line_errors(tmp_path, capsys):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    for argv, message in ((["bench", str(junk)], "not a valid LiteRT model"),
                          (["eval", str(tmp_path / "none.tflite")], "does not exist")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err


TINY = textwrap.dedent(
    """
    import torch
    from torch import nn


    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    """
)


def test_quantize_writes_tflite_that_litert_runs_as_the_program(tmp_path, capsys):
    (tmp_path / "tiny.py").write_text(TINY)
    rng = np.random.default_rng(0)
    np.save(tmp_path / "x.npy", rng.standard_normal((16, 1, 12, 12)).astype(np.float32))
    np.savez(tmp_path / "xy.npz", x=rng.standard_normal((10, 1, 12, 12)).astype(np.float32),
             y=rng.integers(0, 10, 10))
    out, saved = tmp_path / "m.tflite", tmp_path / "m.safetensors"
    report = _json(capsys, ["quantize", f"{tmp_path / 'tiny.py'}:build", "--calib",
                            str(tmp_path / "x.npy"), "--eval", str(tmp_path / "xy.npz"),
                            "--repeats", "3", "-o", str(out), "--save-program", str(saved)])
    assert report["runtime"] == "LiteRT" and report["int8_size_bytes"] == out.stat().st_size
    assert out.read_bytes()[4:8] == b"TFL3"
    x = rng.standard_normal((5, 1, 12, 12)).astype(np.float32)
    want = run_reference(load_program(saved), x, mode="fixed_point")
    got = LiteRtSession(out, ref_kernels=True).run(x)
    np.testing.assert_array_equal(got, next(iter(want.values())))
