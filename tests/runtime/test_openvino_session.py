"""OpenVinoSession: argument checks, a missing `openvino` package, batch fixing, random feeds
and integer intermediates shifted back to their IntProgram dtype."""

import sys

import numpy as np
import pytest

from intq.convert.synthetic import random_cnn
from intq.export.onnx_qdq import export_onnx_qdq
from intq.runtime import OpenVinoSession, run_reference


@pytest.fixture(scope="module")
def program():
    return random_cnn(5, dtype="int8", batch=None)


@pytest.mark.parametrize("kwargs, message", [
    ({"threads": 0}, "threads must be an int >= 1"),
    ({"precision": "f64"}, "precision must be one of"),
    ({"batch": 0}, "batch must be an int >= 1"),
])
def test_bad_arguments(program, kwargs, message):
    with pytest.raises(ValueError, match=message):
        OpenVinoSession(export_onnx_qdq(program).SerializeToString(), **kwargs)


def test_missing_openvino_says_how_to_install(program, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(ImportError, match=r"pip install 'intq\[openvino\]'"):
        OpenVinoSession(export_onnx_qdq(program).SerializeToString())


def test_batch_and_random_feed(program):
    model = export_onnx_qdq(program).SerializeToString()
    with pytest.raises(ValueError, match="dynamic shape"):
        OpenVinoSession(model).random_feed()
    feed = OpenVinoSession(model, batch=3).random_feed(seed=1)
    assert [v.shape for v in feed.values()] == [(3, 3, 12, 12)]
    np.testing.assert_array_equal(next(iter(feed.values())), np.random.default_rng(1)
                                  .standard_normal((3, 3, 12, 12)).astype(np.float32))


def test_run_all_returns_intermediates_in_program_dtypes(program):
    """With every integer tensor a model output, OpenVINO computes each op in float32 before
    quantizing: asserted within 1 LSB of the reference (identical on this program and input
    when written); int8 tensors come back as int8."""
    session = OpenVinoSession(export_onnx_qdq(program, intermediates=True).SerializeToString())
    x = np.random.default_rng(2).standard_normal((2, 3, 12, 12)).astype(np.float32)
    got, ref = session.run_all(x), run_reference(program, x, return_all=True)
    with pytest.raises(ValueError, match="use run_all"):
        session.run(x)
    for name in program.tensors:
        assert got[name].dtype == np.int8, name
        assert np.abs(got[name].astype(int) - ref[name]).max() <= 1, name
