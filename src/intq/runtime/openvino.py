"""OpenVinoSession: a thin OpenVINO (CPU) session for ONNX models, such as intq's QDQ export.

    session = OpenVinoSession("model.qdq.onnx", threads=1)   # f32 inference precision
    y = session.run(x)              # the model's single float output
    every = session.run_all(x)      # every output, integer tensors in their IntProgram dtype

OpenVINO's low-precision transformations turn the QuantizeLinear/DequantizeLinear pairs of a
QDQ model (intq.export.onnx_qdq) into int8 convolutions and matrix products; everything else
runs at INFERENCE_PRECISION_HINT, "f32" by default (OpenVINO would otherwise pick bf16 or f16
on CPUs that have them). `layer_precisions` says which layers ran in which precision.
Threads are not pinned to cores (ENABLE_CPU_PINNING false, like ONNX Runtime's default): on
a machine shared with other processes a pinned thread waits for its core, which measured
1.4x the median wall time of the unpinned one at the same CPU time (EfficientNet-Lite0,
1 thread, load average 17 on 2 cores).
The `openvino` package (the `openvino` extra of intq) is imported when a session is created.
"""

import json
import os
from collections import Counter
from collections.abc import Mapping

import numpy as np

__all__ = ["PRECISIONS", "OpenVinoSession"]

PRECISIONS = ("f32", "bf16", "f16")


class OpenVinoSession:
    """OpenVINO CPU model compiled for latency: one stream, `threads` inference threads;
    `batch` sets a dynamic first input dimension (static shapes get the faster kernels)."""

    def __init__(self, model: str | os.PathLike | bytes, threads: int = 1,
                 precision: str = "f32", batch: int | None = None):
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"OpenVinoSession: threads must be an int >= 1, got {threads!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVinoSession: precision must be one of {PRECISIONS}, "
                             f"got {precision!r}")
        try:
            import openvino as ov
        except ImportError:
            raise ImportError("OpenVINO is not installed: pip install 'intq[openvino]'"
                              ) from None
        core = ov.Core()
        source = model if isinstance(model, bytes) else str(model)
        self.precision = precision
        network = core.read_model(source)
        if batch is not None:
            _fix_batch(network, batch)
        self._compiled = core.compile_model(network, "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
            "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision,
            "ENABLE_CPU_PINNING": False})
        self._request = self._compiled.create_infer_request()
        self.outputs = [o.get_any_name() for o in self._compiled.outputs]
        self.inputs = [i.get_any_name() for i in self._compiled.inputs]
        self.dtypes = _intq_dtypes(model)

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """The model's single output for `inputs` (an array, or a mapping by input name)."""
        if len(self.outputs) != 1:
            raise ValueError(f"OpenVinoSession.run: the model has outputs {self.outputs}; "
                             f"use run_all")
        return self._request.infer(self._feed(inputs))[0].copy()

    def run_all(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name; integer tensors of an intq export in their IntProgram dtype
        (int8 tensors run as uint8 = q + 128 and are shifted back)."""
        values = self._request.infer(self._feed(inputs))
        out = {name: values[i].copy() for i, name in enumerate(self.outputs)}
        for name, value in out.items():
            if self.dtypes.get(name) == "int8":
                out[name] = (value.astype(np.int16) - 128).astype(np.int8)
        return out

    def random_feed(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded standard-normal float32 inputs of the compiled shapes (fix a dynamic batch
        with `batch`); ValueError for a dynamic shape."""
        rng = np.random.default_rng(seed)
        feed = {}
        for port in self._compiled.inputs:
            shape = port.get_partial_shape()
            if shape.is_dynamic:
                raise ValueError(f"input {port.get_any_name()!r} has dynamic shape {shape}; "
                                 f"give a batch size")
            feed[port.get_any_name()] = rng.standard_normal(
                [d.get_length() for d in shape]).astype(np.float32)
        return feed

    def layer_precisions(self) -> Counter:
        """(layer type, runtime precision) -> count over the compiled model's layers."""
        counts = Counter()
        for node in self._compiled.get_runtime_model().get_ordered_ops():
            info = node.get_rt_info()
            counts[(info["layerType"].astype(str), info["runtimePrecision"].astype(str))] += 1
        return counts

    def _feed(self, inputs) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise ValueError(f"OpenVinoSession: the model has inputs {self.inputs}; pass "
                                 f"a mapping from names to arrays")
            inputs = {self.inputs[0]: inputs}
        return {name: np.ascontiguousarray(value, dtype=np.float32)
                for name, value in inputs.items()}


def _fix_batch(network, batch: int) -> None:
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"OpenVinoSession: batch must be an int >= 1, got {batch!r}")
    shapes = {}
    for port in network.inputs:
        shape = port.get_partial_shape()
        if shape.rank.is_dynamic or any(d.is_dynamic for d in list(shape)[1:]):
            raise ValueError(f"OpenVinoSession: input {port.get_any_name()!r} has shape "
                             f"{shape}: only its first dimension may be dynamic")
        first = shape[0].get_length() if shape[0].is_static else batch
        shapes[port] = [first, *(d.get_length() for d in list(shape)[1:])]
    network.reshape(shapes)


def _intq_dtypes(model: str | os.PathLike | bytes) -> dict[str, str]:
    """The "intq.dtypes" metadata of an ONNX model written by intq ({} for other models)."""
    import onnx

    try:
        proto = (onnx.load_from_string(model) if isinstance(model, bytes)
                 else onnx.load(str(model), load_external_data=False))
    except Exception:  # not ONNX (OpenVINO IR): no intq metadata
        return {}
    meta = {p.key: p.value for p in proto.metadata_props}
    return json.loads(meta.get("intq.dtypes", "{}"))
