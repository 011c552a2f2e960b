"""LiteRtSession: a thin LiteRT interpreter for models written by intq.export.tflite.

    session = LiteRtSession("model.tflite", threads=1)          # XNNPACK (LiteRT's default)
    y = session.run(x)                                           # NCHW in, the program's output
    ref = LiteRtSession(data, ref_kernels=True, preserve_all=True)
    every = ref.run_all(x)       # program outputs + every integer tensor, in program form

Arrays go in and come out in the program's layout (NCHW): 4-D tensors are transposed to and
from the model's NHWC at the boundary (5-D channel-shuffle tensors from (N, H, W, a, b)),
and int8 tensors of uint8 program tensors are shifted back by 128. A model without intq's
metadata (another converter's) keeps its layout; its integer inputs and outputs are quantized
and dequantized with its own parameters.
`ref_kernels` selects OpResolverType.BUILTIN_REF (the reference kernels, no delegate);
`preserve_all` keeps intermediate tensors readable (needed by run_all).
ai_edge_litert is imported when a session is created.
"""

import json
import os
from pathlib import Path

import numpy as np

from intq.export.tflite import METADATA_KEY

__all__ = ["LiteRtSession", "is_tflite", "read_intq_metadata"]

_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def is_tflite(model: str | os.PathLike | bytes) -> bool:
    """True for a path ending in .tflite or bytes carrying the TFLite identifier "TFL3"."""
    if isinstance(model, bytes):
        return model[4:8] == b"TFL3"
    return Path(model).suffix == ".tflite"


def read_intq_metadata(model: bytes) -> dict | None:
    """The "intq" metadata of a .tflite model (None when the model was not written by intq)."""
    from ai_edge_litert import schema_py_generated as fb

    m = fb.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        if entry.Name() == METADATA_KEY.encode():
            return json.loads(m.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    return None


class LiteRtSession:
    """LiteRT interpreter with `threads` threads; XNNPACK unless `ref_kernels`."""

    def __init__(self, model: str | os.PathLike | bytes, *, threads: int = 1,
                 ref_kernels: bool = False, preserve_all: bool = False):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        self.model = model if isinstance(model, bytes) else Path(model).read_bytes()
        resolver = OpResolverType.BUILTIN_REF if ref_kernels else OpResolverType.AUTO
        self.interpreter = Interpreter(model_content=self.model, num_threads=threads,
                                       experimental_op_resolver_type=resolver,
                                       experimental_preserve_all_tensors=preserve_all)
        self.meta = read_intq_metadata(self.model)
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.input_shapes = [tuple(d["shape"]) for d in self.inputs]
        self.interpreter.allocate_tensors()

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """The first input's shape in the program's layout (NCHW for 4-D); None = dynamic."""
        detail = self.inputs[0]
        signature = detail.get("shape_signature", detail["shape"])
        shape = tuple(None if s == -1 else int(d) for s, d in zip(signature, detail["shape"],
                                                                 strict=True))
        return tuple(shape[i] for i in _TO_NCHW) if self._nhwc(detail["name"]) else shape

    def _nhwc(self, name: str) -> bool:
        """True when tensor `name` is NHWC in the model and NCHW in the program."""
        if self.meta is None:
            return False
        info = self.meta["integer_tensors"].get(name)
        layout = info["layout"] if info else self.meta["float_layouts"].get(name, "plain")
        return layout == "nhwc"

    def bind(self, x: np.ndarray):
        """A call without arguments that runs `x` (set input, invoke, read the output): what
        latency measurements time, the layout change done once here."""
        self._invoke([x])
        index, out = self.inputs[0]["index"], self.outputs[0]["index"]
        nhwc = np.ascontiguousarray(self.interpreter.get_tensor(index))
        interpreter = self.interpreter

        def call():
            interpreter.set_tensor(index, nhwc)
            interpreter.invoke()
            return interpreter.get_tensor(out)

        return call

    def run(self, x: np.ndarray) -> np.ndarray:
        """The first output for the first input `x` (program layout)."""
        self._invoke([x])
        return self._read(self.outputs[0]["index"], self.outputs[0]["name"])

    def run_all(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Program outputs and every integer program tensor (needs preserve_all or ref)."""
        self._invoke([x])
        names = {d["name"]: d["index"] for d in self.interpreter.get_tensor_details()}
        wanted = [*self.meta["outputs"], *self.meta["integer_tensors"]]
        return {n: self._read(names[n], n) for n in wanted}

    def run_outputs(self, inputs: np.ndarray | dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every model output by tensor name, in program form (a model written with
        intermediates=True hands out every integer tensor, from XNNPACK too). `inputs`: the
        array of a single-input model, or arrays by input name."""
        if isinstance(inputs, dict):
            inputs = [inputs[d["name"]] for d in self.inputs]
        else:
            inputs = [inputs]
        self._invoke(inputs)
        return {d["name"]: self._read(d["index"], d["name"]) for d in self.outputs}

    def _invoke(self, arrays: list[np.ndarray]) -> None:
        for detail, x in zip(self.inputs, arrays, strict=True):
            x = np.asarray(x, np.float32)
            if x.ndim == 4 and self._nhwc(detail["name"]):
                x = x.transpose(_TO_NHWC)
            if self.meta is None and detail["dtype"] != np.float32:
                x = _quantize(x, detail)
            if tuple(detail["shape"]) != x.shape:
                self.interpreter.resize_tensor_input(detail["index"], x.shape)
                self.interpreter.allocate_tensors()
                detail["shape"] = np.array(x.shape)
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(x))
        self.interpreter.invoke()

    def _read(self, index: int, name: str) -> np.ndarray:
        value = self.interpreter.get_tensor(index)
        if self.meta is None:
            detail = next(d for d in self.outputs if d["index"] == index)
            return _dequantize(value, detail) if value.dtype != np.float32 else value
        info = self.meta["integer_tensors"].get(name)
        if info is not None:
            value = (value.astype(np.int16) - info["offset"]).astype(info["dtype"])
        if info is not None and info["layout"] == "nhwc-split" and value.ndim == 5:
            return value.transpose(0, 3, 4, 1, 2)  # (N, H, W, a, b) -> (N, a, b, H, W)
        return value.transpose(_TO_NCHW) if self._nhwc(name) and value.ndim == 4 else value


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    """float32 -> the integer input of a foreign model (round half away, as TFLite)."""
    scale, zero_point = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    q = np.trunc(x / np.float32(scale) + np.copysign(0.5, x)) + zero_point
    return np.clip(q, info.min, info.max).astype(detail["dtype"])


def _dequantize(q: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    return ((q.astype(np.float32) - zero_point) * np.float32(scale)).astype(np.float32)
