"""Reference interpreter ("fixed_point") vs LiteRT's reference kernels (BUILTIN_REF) on written
.tflite models: identical integers in every tensor, identical float logits, for int8 and uint8
programs, both classifier forms and any batch; and the stored quantization parameters."""

import numpy as np
import pytest

from intq.export.tflite import export_tflite
from intq.runtime import run_reference
from intq.runtime.litert import LiteRtSession

from .tflite_programs import tflite_cnn


def _assert_identical(program, data: bytes, x: np.ndarray) -> None:
    got = LiteRtSession(data, ref_kernels=True, preserve_all=True).run_all(x)
    ref = run_reference(program, x, mode="fixed_point", return_all=True)
    for name in [*program.tensors, *program.outputs]:
        assert got[name].dtype == ref[name].dtype, name
        np.testing.assert_array_equal(got[name], ref[name], err_msg=name)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
@pytest.mark.parametrize("float_logits", [True, False])
def test_every_tensor_identical_under_builtin_ref(dtype, float_logits):
    program = tflite_cnn(3, dtype, float_logits=float_logits)
    x = np.random.default_rng(1).standard_normal((3, 3, 12, 12)).astype(np.float32) * 1.5
    _assert_identical(program, export_tflite(program), x)


def test_random_scales_over_seeds():
    """More draws of weights, scales and clamps (float logits, int8)."""
    for seed in range(4, 10):
        program = tflite_cnn(seed)
        x = np.random.default_rng(seed).standard_normal((2, 3, 12, 12)).astype(np.float32)
        _assert_identical(program, export_tflite(program), x)


def test_dynamic_batch_and_xnnpack_run():
    """The batch dimension resizes; XNNPACK's logits stay close to the reference's (its
    requantization differs in the last bit on a few values, measured in BENCHMARKS.md)."""
    program = tflite_cnn(5)
    data = export_tflite(program)
    ref_session, xnn = LiteRtSession(data, ref_kernels=True), LiteRtSession(data)
    for n in (1, 4):
        x = np.random.default_rng(n).standard_normal((n, 3, 12, 12)).astype(np.float32)
        want = run_reference(program, x, mode="fixed_point")["y"]
        np.testing.assert_array_equal(ref_session.run(x), want)
        assert np.abs(xnn.run(x) - want).max() <= 0.05 * np.abs(want).max()


def test_quantization_parameters_are_the_programs():
    program = tflite_cnn(6, "uint8")
    session = LiteRtSession(export_tflite(program), ref_kernels=True)
    details = {d["name"]: d for d in session.interpreter.get_tensor_details()}
    for name, qt in program.tensors.items():
        q = details[name]["quantization_parameters"]
        assert details[name]["dtype"] == np.int8, name
        assert q["scales"].tolist() == [np.float32(qt.scale)]
        assert q["zero_points"].tolist() == [qt.zero_point - 128], name
    for op in program.ops:
        if not hasattr(op, "weight_scale") or op.requant is None:
            continue
        w = details[f"{op.output}/weight"]["quantization_parameters"]
        depthwise = op.weight.ndim == 4 and op.groups > 1 and op.groups == op.weight.shape[0]
        assert w["quantized_dimension"] == (3 if depthwise else 0), op.label
        np.testing.assert_array_equal(w["scales"], np.broadcast_to(op.weight_scale,
                                                                   op.weight.shape[:1]))
        assert not w["zero_points"].any()
        bias = details[f"{op.output}/bias"]
        assert bias["dtype"] == np.int32
        s_in = np.float32(program.tensors[op.inputs[0]].scale)
        np.testing.assert_array_equal(bias["quantization_parameters"]["scales"],
                                      s_in * np.broadcast_to(op.weight_scale,
                                                             op.weight.shape[:1]))
