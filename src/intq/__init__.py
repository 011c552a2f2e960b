"""intq: quantize convolutional networks for efficient integer-only inference.

    import intq
    qm = intq.quantize(model, calib_x, recipe="sym-per-channel-8")   # PTQ, simulated int8
    program = intq.convert_to_program(qm, input_shape=(3, 224, 224))  # integer-only program
    intq.export_onnx(program, "model.int8.onnx")                      # run it in ONNX Runtime
    outputs = intq.run_reference(program, x)                          # the bit-exact oracle

Quantization-aware training: ``intq.prepare_qat`` / ``intq.convert_qat``. Heavy modules
(ONNX export) load on first use.
"""

from importlib import import_module

from intq.convert import load_program, save_program
from intq.convert.from_graph import convert_to_program
from intq.errors import IntqError, UsageError
from intq.fakequant import Quantizer, QuantSpec
from intq.ptq import quantize
from intq.qat import convert_qat, prepare_qat
from intq.recipes import Recipe, get_recipe, recipe_names
from intq.report import layer_report
from intq.runtime.reference import run_reference

__version__ = "0.1.0"

__all__ = [
    # configuration
    "QuantSpec",
    "Recipe",
    "get_recipe",
    "recipe_names",
    # workflows
    "quantize",
    "prepare_qat",
    "convert_qat",
    "layer_report",
    # integer program
    "convert_to_program",
    "run_reference",
    "export_onnx",
    "export_onnx_qdq",
    "load_program",
    "save_program",
    # building blocks and errors
    "Quantizer",
    "IntqError",
    "UsageError",
    "__version__",
]

_LAZY = {"export_onnx": "intq.export.onnx", "export_onnx_qdq": "intq.export.onnx_qdq"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'intq' has no attribute {name!r}")
