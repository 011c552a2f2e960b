"""Writers that turn an IntProgram into a runtime's model file (ONNX; onnx is imported lazily)."""

from intq.export.onnx import WEIGHT_TYPES, export_onnx

__all__ = ["WEIGHT_TYPES", "export_onnx"]
