"""The worked examples in the fakequant docstrings run and print what they claim."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["lsq", "presets", "quantizer", "spec", "ste"])
def test_docstring_examples(name):
    module = importlib.import_module(f"intq.fakequant.{name}")
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
