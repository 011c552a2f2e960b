"""Shape inference agrees with the shapes the reference interpreter actually produces."""

import numpy as np
import pytest

from intq.convert import ProgramBuilder, QTensor, infer_shapes
from intq.convert.shapes import conv_output_size
from intq.convert.synthetic import random_cnn
from intq.runtime import run_reference


@pytest.mark.parametrize("batch", [2, None])
def test_inferred_shapes_match_a_run(batch):
    program = random_cnn(0, batch=batch)
    shapes = infer_shapes(program)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12)).astype(np.float32)
    for name, value in run_reference(program, x, return_all=True).items():
        assert len(shapes[name]) == value.ndim
        assert all(d is None or d == v for d, v in zip(shapes[name], value.shape, strict=True))
        assert (shapes[name][0] is None) == (batch is None)


def test_conv_output_size_formula():
    assert conv_output_size(7, 3, 2, 1, 1) == 4
    assert conv_output_size(10, 3, 1, 0, 0, dilation=2) == 6
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        conv_output_size(2, 5, 1, 0, 0)


def test_reshape_of_dynamic_batch_needs_minus_one_there():
    b = ProgramBuilder()
    q = b.quantize(b.input("x", (None, 4, 2, 2)), QTensor(0.1, 0))
    assert b.shape(b.reshape(q, (-1, 16))) == (None, 16)
    with pytest.raises(ValueError, match="put -1 where the dynamic"):
        b.reshape(q, (2, -1))
