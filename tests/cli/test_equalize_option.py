"""``--equalize / --no-equalize`` on ``intq quantize`` and ``intq qat``: the recipe's default
(on for per-tensor weights) unless the user says otherwise, also after ``--per-tensor``."""

import pytest

from intq.cli import build_parser
from intq.cli import qat as qat_cli
from intq.cli import quantize as quantize_cli


def _quantize_recipe(*flags):
    return quantize_cli._recipe(build_parser().parse_args(["quantize", "resnet-fmnist", *flags]))


def _qat_recipe(*flags):
    argv = ["qat", "resnet-fmnist", "-o", "x.onnx", *flags]
    return qat_cli._recipe(build_parser().parse_args(argv))


@pytest.mark.parametrize("recipe_of", [_quantize_recipe, _qat_recipe])
@pytest.mark.parametrize(("flags", "want"), [
    ((), False),
    (("--recipe", "asym-per-layer-8"), True),
    (("--recipe", "asym-per-channel-8", "--per-tensor"), True),
    (("--recipe", "asym-per-layer-8", "--no-equalize"), False),
    (("--equalize",), True),
    (("--recipe", "asym-per-layer-8", "--per-channel", "--no-equalize"), False),
])
def test_flag_overrides_the_granularity_default(recipe_of, flags, want):
    assert recipe_of(*flags).equalize is want
