"""Writers that turn an IntProgram into a runtime's model file (ONNX in the QOperator or the
QDQ format; onnx is imported lazily)."""

from intq.export.onnx import WEIGHT_TYPES, export_onnx
from intq.export.onnx_qdq import ONNX_FORMATS, export_onnx_qdq

__all__ = ["ONNX_FORMATS", "WEIGHT_TYPES", "export_onnx", "export_onnx_qdq"]
