"""Runtimes for an IntProgram: the numpy reference interpreter and an ONNX Runtime session.

`run_reference` is the oracle (two semantics: ONNX Runtime float32, TFLite fixed point);
`OrtSession` runs a model written by intq.export.onnx (onnxruntime is imported lazily),
`OpenVinoSession` one written by intq.export.onnx_qdq (openvino, an optional extra, too).
"""

from intq.runtime.onnxruntime import OrtSession
from intq.runtime.openvino import OpenVinoSession
from intq.runtime.reference import run_reference
from intq.runtime.requantize import MODES

__all__ = ["MODES", "OpenVinoSession", "OrtSession", "run_reference"]
