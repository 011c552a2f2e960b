"""Writers that turn an IntProgram into a runtime's model file: ONNX and LiteRT (.tflite);
onnx and ai_edge_litert are imported lazily."""

from intq.export.onnx import WEIGHT_TYPES, export_onnx
from intq.export.tflite import export_tflite

__all__ = ["WEIGHT_TYPES", "export_onnx", "export_tflite"]
