"""Pins ONNX Runtime's u8·s8 saturation and the exporter's weight-type choice.

MLAS u8·s8 GEMM kernels without VNNI add adjacent products in int16 (vpmaddubsw): with
activations 255 and weights 127 every pair sum is 64770 > 32767 and saturates. With VNNI
(vpdpbusd) the sums are exact. u8·u8 (weight zero point 128) and 7-bit s8 weights
(|255·64·2| < 32768) are exact on every x86-64 CPU, which is what weight_type="auto" uses.
"""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from intq.convert.synthetic import random_cnn
from intq.export import export_onnx
from intq.export.onnx import EXACT_ANY_X86, EXACT_VNNI
from intq.runtime.onnxruntime import cpu_has_vnni


def _qlinearconv(w: np.ndarray, w_zero_point: int, x: np.ndarray) -> np.ndarray:
    """One 1x1 QLinearConv (scales 1, zero points 0 except the weights', output scale 2^10)
    run by ONNX Runtime; returns the int output."""
    consts = [numpy_helper.from_array(np.float32(1), "s1"), numpy_helper.from_array(
        np.uint8(0), "z"), numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(np.array(w_zero_point, w.dtype), "wz"),
        numpy_helper.from_array(np.float32(2.0**10), "ys")]
    node = helper.make_node("QLinearConv", ["x", "s1", "z", "w", "s1", "wz", "ys", "z"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.UINT8, x.shape)], [helper.make_tensor_value_info(
            "y", TensorProto.UINT8, None)], consts)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0].astype(np.int64)


def _exact(w_centered: np.ndarray, x: np.ndarray) -> np.ndarray:
    acc = np.einsum("nchw,oc->nohw", x.astype(np.int64), w_centered[:, :, 0, 0])
    return np.clip(np.rint(acc / 2.0**10), 0, 255)


X = np.full((1, 64, 4, 4), 255, np.uint8)
W_FULL = np.full((8, 64, 1, 1), 127, np.int64)


def test_full_range_u8_s8_saturates_exactly_when_the_cpu_lacks_vnni():
    vnni = cpu_has_vnni()
    if vnni is None:
        pytest.skip("CPU flags unknown")
    got = _qlinearconv(W_FULL.astype(np.int8), 0, X)
    wrong = np.mean(got != _exact(W_FULL, X))
    assert (wrong == 0) if vnni else (wrong > 0)


@pytest.mark.parametrize("weights, zero_point", [
    ((W_FULL + 128).astype(np.uint8), 128),
    (np.full((8, 64, 1, 1), 63, np.int8), 0),
    (np.full((8, 64, 1, 1), -64, np.int8), 0),
])
def test_chosen_types_are_exact(weights, zero_point):
    centered = weights.astype(np.int64) - zero_point
    np.testing.assert_array_equal(_qlinearconv(weights, zero_point, X), _exact(centered, X))


def _weight_dtypes(model: onnx.ModelProto) -> set[int]:
    """Element types of conv/linear weights (average pools always use int8 ones)."""
    return {t.data_type for t in model.graph.initializer
            if t.name.endswith("/weight") and not t.name.startswith("avgpool")}


@pytest.mark.parametrize("bits, weight_type, dtypes, exact_on", [
    (8, "auto", {TensorProto.UINT8}, EXACT_ANY_X86),
    (7, "auto", {TensorProto.INT8}, EXACT_ANY_X86),
    (4, "auto", {TensorProto.INT4}, EXACT_ANY_X86),
    (8, "s8", {TensorProto.INT8}, EXACT_VNNI),
    (4, "s8", {TensorProto.INT4}, EXACT_ANY_X86),
    (4, "u8", {TensorProto.UINT8}, EXACT_ANY_X86),
])
def test_exporter_weight_types(bits, weight_type, dtypes, exact_on):
    model = export_onnx(random_cnn(0, weight_bits=bits), weight_type=weight_type)
    assert _weight_dtypes(model) == dtypes
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["intq.exact_on"] == exact_on
