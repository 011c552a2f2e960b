"""``--normalize``: the zoo model's own pixel normalization by default, the user's if given."""

import argparse

import pytest

from intq.cli import _common as common
from intq.cli import main
from intq.zoo.normalization import FASHION_MNIST, IMAGENET, INCEPTION
from intq.zoo.registry import MODEL_ZOO


def _args(argv):
    parser = argparse.ArgumentParser()
    common.add_normalize_argument(parser)
    return parser.parse_args(argv)


def test_zoo_entry_decides_unless_the_user_names_one():
    lite = MODEL_ZOO["efficientnet-lite0"]
    assert common.normalization(_args([]), lite) is INCEPTION
    assert common.normalization(_args(["--normalize", "imagenet"]), lite) is IMAGENET
    assert common.normalization(_args(["--normalize", "fashion-mnist"]), None) is FASHION_MNIST
    assert common.normalization(_args([]), None) is None
    assert common.normalization(_args([]), MODEL_ZOO["resnet-fmnist"]) is None


@pytest.mark.parametrize("command", ["quantize", "eval", "qat"])
def test_unknown_name_is_a_usage_error(command, capsys):
    argv = [command, "resnet-fmnist", "--normalize", "caffe"]
    if command == "qat":
        argv += ["-o", "x.onnx"]
    assert main(argv) == 2
    assert "invalid choice: 'caffe'" in capsys.readouterr().err
