"""Peer quantizers run side by side with intq: ONNX Runtime's quantize_static and PyTorch FX PTQ.

Used by the benchmarks only; intq itself never imports this module.
"""

import copy
import io
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ORT_CALIBRATION_METHODS = ("MinMax", "Entropy", "Percentile", "Distribution")


def export_float_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], path: Path) -> Path:
    """Float ONNX export (TorchScript exporter, opset 17) with a dynamic batch axis."""
    buffer = io.BytesIO()
    torch.onnx.export(
        model.eval(),
        (torch.zeros(1, *input_shape),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    path.write_bytes(buffer.getvalue())
    return path


class _Reader:
    """onnxruntime CalibrationDataReader over a float32 NCHW tensor, one sample per call."""

    def __init__(self, x: torch.Tensor, batch_size: int = 8):
        self._batches = [x[i : i + batch_size].numpy() for i in range(0, len(x), batch_size)]
        self._it = iter(self._batches)

    def get_next(self):
        batch = next(self._it, None)
        return None if batch is None else {"input": batch}

    def rewind(self):
        self._it = iter(self._batches)


def ort_quantize_static(float_onnx: Path, calib_x: torch.Tensor, method: str, out: Path) -> float:
    """Quantize with ORT's quantize_static (QDQ, per-channel, u8 activations, s8 weights);
    returns the calibration + quantization wall time in seconds."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        start = time.perf_counter()
        quant_pre_process(str(float_onnx), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(out),
            _Reader(calib_x),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, method),
            extra_options={"CalibTensorRangeSymmetric": False},
        )
        return time.perf_counter() - start


def torch_fx_ptq(model: torch.nn.Module, calib_x: torch.Tensor, batch_size: int = 8):
    """PyTorch FX post-training quantization, x86 default qconfig; returns (model, seconds)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    torch.backends.quantized.engine = "x86"
    start = time.perf_counter()
    prepared = prepare_fx(
        copy.deepcopy(model).eval(), get_default_qconfig_mapping("x86"), (calib_x[:1],)
    )
    with torch.no_grad():
        for i in range(0, len(calib_x), batch_size):
            prepared(calib_x[i : i + batch_size])
    quantized = convert_fx(prepared)
    return quantized, time.perf_counter() - start


def ort_logits(onnx_path: Path, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Run an ONNX model in ONNX Runtime (CPU, default providers) over ``x``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("INTQ_BENCH_THREADS", "2"))
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: x[i : i + batch_size].numpy()})[0]
        for i in range(0, len(x), batch_size)
    ]
    return torch.from_numpy(np.concatenate(outs))


def torch_logits(model, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Run a PyTorch model (float, FX-quantized, ...) over ``x`` in batches, no gradients."""
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
