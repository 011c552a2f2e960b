"""``intq eval`` and ``intq bench`` on .tflite files: LiteRT with XNNPACK or, with
--ref-kernels, its reference kernels (whose logits are the reference interpreter's); bad
files are one-line errors."""

import json

import pytest

from intq.cli import main
from intq.convert.synthetic import RandomNet
from intq.export.tflite import export_tflite
from intq.runtime import run_reference
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
    assert out["kind"] == "tflite" and out["runtime"] == "LiteRT, reference kernels"
    x = load_fashion_mnist("test").x[:32].numpy()
    logits = run_reference(program, x, mode="fixed_point")[program.outputs[0]]
    labels = load_fashion_mnist("test").y[:32].numpy()
    assert out["correct"] == int((logits.argmax(1) == labels).sum())
    xnn = _json(capsys, ["eval", str(path), "--data", "fashion-mnist", "--n", "32"])
    assert xnn["runtime"] == "LiteRT, XNNPACK" and xnn["samples"] == 32


def test_bench_times_tflite_against_itself(model, capsys):
    path = str(model[0])
    out = _json(capsys, ["bench", path, "--vs", path, "--repeats", "3", "--warmup", "1"])
    assert out["runtimes"] == ["LiteRT, XNNPACK"] * 2
    assert all(m["median_ms"] > 0 for m in out["models"]) and out["speedup"] > 0


def test_bad_files_are_one_line_errors(tmp_path, capsys):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    for argv, message in ((["bench", str(junk)], "not a valid LiteRT model"),
                          (["eval", str(tmp_path / "none.tflite")], "does not exist")):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err
