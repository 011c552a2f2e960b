"""``intq quantize --w-bits 4 --adaround``: the AdaRound model is exported and run in ONNX
Runtime (its agreement is the ONNX model's), beats plain rounding on the same data, and a
run interrupted during AdaRound writes nothing."""

import json

import pytest

from intq.adaptive_rounding import pipeline as pipeline_module
from intq.cli import build_parser, main
from intq.cli import quantize as quantize_cli
from intq.zoo.fashion_mnist import FASHION_MNIST_DIR

needs_fmnist = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(),
                                  reason="dataset-fashion-mnist not installed")
W4 = ["quantize", "mobilenet-v2-fmnist", "--w-bits", "4", "--calib-size", "32",
      "--eval-size", "100", "--repeats", "1", "--json"]
QUICK_ADAROUND = ["--adaround", "--adaround-iters", "40", "--adaround-images", "32"]


@needs_fmnist
def test_adaround_model_is_written_and_agrees_better_than_nearest(tmp_path, capsys):
    reports = {}
    for name, extra in (("nearest", []), ("adaround", QUICK_ADAROUND)):
        out = tmp_path / f"{name}.onnx"
        assert main([*W4, *extra, "--no-cle", "--bias-correction", "-o", str(out)]) == 0
        reports[name] = json.loads(capsys.readouterr().out)
        assert out.is_file() and reports[name]["int8_size_bytes"] == out.stat().st_size
    assert reports["adaround"]["adaround"] and not reports["nearest"]["adaround"]
    assert reports["adaround"]["weight_spec"].startswith("int4 sym narrow per-channel")
    sqnr = {name: r["agreement"]["sqnr_db"] for name, r in reports.items()}
    assert sqnr["adaround"] > sqnr["nearest"] + 1.0, sqnr


@needs_fmnist
def test_an_interrupted_adaround_writes_nothing(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline_module, "learn_rounding", interrupt)
    assert main([*W4, *QUICK_ADAROUND, "-o", str(tmp_path / "out.onnx")]) == 130
    assert capsys.readouterr().err.endswith("intq: interrupted\n")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("flags", "equalize", "bias_correction", "adaround"), [
    ((), False, True, False),
    (("--cle", "--no-bias-correction"), True, False, False),
    (("--no-cle", "--adaround"), False, True, True),
])
def test_cle_bias_correction_and_adaround_switches(flags, equalize, bias_correction, adaround):
    args = build_parser().parse_args(["quantize", "--w-bits", "4", *flags])
    assert quantize_cli._recipe(args).equalize is equalize
    assert (args.bias_correction, args.adaround) == (bias_correction, adaround)


def test_adaround_scales_switch_reaches_the_settings():
    from intq.cli import _common as common

    args = build_parser().parse_args(["quantize", "--adaround", "--adaround-scales"])
    assert common.adaround_settings(args).learn_scale_and_bias
    args = build_parser().parse_args(["quantize", "--adaround"])
    assert not common.adaround_settings(args).learn_scale_and_bias


def test_adaround_granularity_reaches_the_settings_and_block_refuses_scales(tmp_path, capsys):
    from intq.cli import _common as common

    args = build_parser().parse_args(["quantize", "--adaround", "--adaround-granularity",
                                      "block"])
    assert common.adaround_settings(args).granularity == "block"
    argv = [*W4, *QUICK_ADAROUND, "--adaround-granularity", "block", "--adaround-scales",
            "-o", str(tmp_path / "out.onnx")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--adaround-scales works with" in err
    assert list(tmp_path.iterdir()) == []
