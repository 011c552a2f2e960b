"""OrtSession: runs exported programs, maps exported integer tensors back to program dtypes,
and warns when a model's exactness needs VNNI on a CPU without it."""

import warnings

import numpy as np
import pytest

from intq.convert.synthetic import random_cnn
from intq.export import export_onnx
from intq.runtime import OrtSession, run_reference
from intq.runtime import onnxruntime as ort_module


def test_run_and_run_all(tmp_path):
    program = random_cnn(0, dtype="int8")
    path = tmp_path / "m.onnx"
    export_onnx(program, path, intermediates=True)
    session = OrtSession(path)
    x = np.random.default_rng(0).standard_normal((2, 3, 12, 12))
    y = session.run(x)
    assert y.dtype == np.float32 and y.shape == (2, 10)
    every = session.run_all(x)
    assert set(every) == set(program.tensors) | {"y"}
    assert all(every[n].dtype == np.int8 for n in program.tensors)
    ref = run_reference(program, x, return_all=True)
    np.testing.assert_array_equal(every["y"], ref["y"])
    np.testing.assert_array_equal(every["x_q"], ref["x_q"])


def test_session_rejects_bad_threads_and_multi_input_arrays():
    model = export_onnx(random_cnn(0)).SerializeToString()
    with pytest.raises(ValueError, match="threads"):
        OrtSession(model, threads=0)
    session = OrtSession(model, threads=2)
    session.inputs.append("other")
    with pytest.raises(ValueError, match="pass a mapping"):
        session.run(np.zeros((2, 3, 12, 12), np.float32))


@pytest.mark.parametrize("has_vnni, warns", [(True, False), (False, True), (None, False)])
def test_vnni_warning(monkeypatch, has_vnni, warns):
    model = export_onnx(random_cnn(0), weight_type="s8").SerializeToString()
    monkeypatch.setattr(ort_module, "cpu_has_vnni", lambda: has_vnni)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        OrtSession(model)
    assert any("VNNI" in str(w.message) for w in caught) == warns
