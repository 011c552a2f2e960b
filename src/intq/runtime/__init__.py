"""Runtimes for an IntProgram: the numpy reference interpreter, ONNX Runtime and LiteRT sessions.

`run_reference` is the oracle (two semantics: ONNX Runtime float32, TFLite fixed point);
`OrtSession` runs a model written by intq.export.onnx, `LiteRtSession` one written by
intq.export.tflite (onnxruntime and ai_edge_litert are imported lazily).
"""

from intq.runtime.litert import LiteRtSession
from intq.runtime.onnxruntime import OrtSession
from intq.runtime.reference import run_reference
from intq.runtime.requantize import MODES

__all__ = ["LiteRtSession", "MODES", "OrtSession", "run_reference"]
