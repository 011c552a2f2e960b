"""The worked examples in the qmath docstrings run and print what they claim."""

import doctest
import importlib

import pytest

MODULES = ["fixedpoint", "metrics", "qparams", "quantize", "quantize_np", "ranges", "rounding"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"intq.qmath.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
