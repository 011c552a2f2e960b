"""Runtimes for an IntProgram: the numpy reference interpreter; ONNX Runtime, OpenVINO, LiteRT.

`run_reference` is the oracle (two semantics: ONNX Runtime float32, TFLite fixed point);
`OrtSession` runs a model written by intq.export.onnx (onnxruntime is imported lazily),
`OpenVinoSession` one written by intq.export.onnx_qdq (openvino, an optional extra, too),
`LiteRtSession` one written by intq.export.tflite (ai_edge_litert, imported lazily).
"""

from intq.runtime.litert import LiteRtSession
from intq.runtime.onnxruntime import OrtSession
from intq.runtime.openvino import OpenVinoSession
from intq.runtime.reference import run_reference
from intq.runtime.requantize import MODES

__all__ = ["LiteRtSession", "MODES", "OpenVinoSession", "OrtSession", "run_reference"]
