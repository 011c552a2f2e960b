"""Every zoo model, quantized with the default recipe on real images and written as .tflite:
LiteRT's reference kernels (BUILTIN_REF) compute the same int8 tensors as the reference
interpreter in fixed-point mode on every layer, and the same float32 logits. The models'
ReLU/ReLU6 clamps all become fused activations, paddings SAME/VALID or a PAD, and no
TRANSPOSE or clamp op appears. Fashion-MNIST: shipped weights, 8 test images (calibrated on
64 others); EfficientNet-Lite0: published weights, 1 photograph (calibrated on 4)."""

import warnings

import numpy as np
import pytest
import torch

from intq.convert.from_graph import convert_to_program
from intq.export.tflite import export_tflite
from intq.ptq import quantize
from intq.runtime import run_reference
from intq.runtime.litert import LiteRtSession
from intq.zoo import MODEL_ZOO, load_fashion_mnist, load_model
from intq.zoo.natural_images import load_natural_images

EFFICIENTNET = "efficientnet-lite0"
FMNIST = [n for n, m in MODEL_ZOO.items() if m.dataset == "fashion-mnist"]


def _program_and_images(name: str):
    if name == EFFICIENTNET:
        norm = MODEL_ZOO[name].normalization
        calib = load_natural_images("calibration", 4, norm).x
        x = load_natural_images("evaluation", 1, norm).x
    else:
        test = load_fashion_mnist("test").x
        calib, x = test[1000:1064], test[:8]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # dead-channel notes
            qgm = quantize(load_model(name), calib, batch_size=64, progress=False)
    finally:
        torch.set_num_threads(threads)
    return convert_to_program(qgm, tuple(x.shape[1:])), x.numpy()


@pytest.mark.parametrize("name", [*FMNIST, pytest.param(EFFICIENTNET,
                                                        marks=pytest.mark.slow)])
def test_zoo_model_is_bit_exact_under_builtin_ref(name):
    program, x = _program_and_images(name)
    data = export_tflite(program)
    session = LiteRtSession(data, ref_kernels=True, preserve_all=True)
    got = session.run_all(x)
    ref = run_reference(program, x, mode="fixed_point", return_all=True)
    for tensor in [*program.tensors, *program.outputs]:
        assert got[tensor].dtype == ref[tensor].dtype, tensor
        np.testing.assert_array_equal(got[tensor], ref[tensor], err_msg=tensor)
    ops = {o["op_name"] for o in session.interpreter._get_ops_details()}
    assert not ops & {"TRANSPOSE", "MAXIMUM", "MINIMUM"}, ops
    scales = {d["name"]: d["quantization_parameters"]["scales"]
              for d in session.interpreter.get_tensor_details()}
    for tensor, qt in program.tensors.items():
        assert scales[tensor].tolist() == [np.float32(qt.scale)], tensor
