"""IntProgram: the integer program every runtime executes, how to build it, and its file format.

`program` defines the data structure (read its docstring first), `builder` builds one op by op,
`requant` derives requantization multipliers the way ONNX Runtime and TFLite do, `shapes`
infers tensor shapes, `serialize` saves/loads one file without pickle, `synthetic` makes random
programs for tests and benchmarks.
"""

from intq.convert.builder import ProgramBuilder
from intq.convert.program import (
    ACTIVATION_DTYPES,
    FLOAT_OPS,
    AddRequant,
    Dequantize,
    Flatten,
    FloatOp,
    Input,
    IntProgram,
    Op,
    Pad,
    QAdd,
    QAvgPool2d,
    QConcat,
    QConv2d,
    QGlobalAvgPool,
    QLinear,
    QMaxPool2d,
    QTensor,
    Quantize,
    Requant,
    Reshape,
)
from intq.convert.requant import (
    add_requant,
    avgpool_requant,
    avgpool_weight_scale,
    conv_requant,
    global_avgpool_requant,
)
from intq.convert.serialize import load_program, save_program
from intq.convert.shapes import infer_shapes

__all__ = [
    # data structure
    "ACTIVATION_DTYPES",
    "FLOAT_OPS",
    "AddRequant",
    "Input",
    "IntProgram",
    "Op",
    "QTensor",
    "Requant",
    # ops
    "Dequantize",
    "Flatten",
    "FloatOp",
    "Pad",
    "QAdd",
    "QAvgPool2d",
    "QConcat",
    "QConv2d",
    "QGlobalAvgPool",
    "QLinear",
    "QMaxPool2d",
    "Quantize",
    "Reshape",
    # building
    "ProgramBuilder",
    "add_requant",
    "avgpool_requant",
    "avgpool_weight_scale",
    "conv_requant",
    "global_avgpool_requant",
    "infer_shapes",
    # files
    "load_program",
    "save_program",
]
