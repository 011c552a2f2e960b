"""Save and load an IntProgram as one safetensors file: no pickle, nothing is ever executed.

Layout: a safetensors file whose metadata holds
    "intq.format" = "intq-program", "intq.version" = "3",
    "intq.program" = JSON of inputs, outputs, tensors (QTensor fields), ops,
    metadata,
and whose tensors hold every array, keyed "ops.<index>.<field>" (weight, weight_scale, bias and,
for stored requantization, requant.multiplier_f32, requant.m0, requant.shift), little-endian
as safetensors defines. Version 4 added the float islands (FloatSubgraph: its ONNX bytes as
the U8 array "ops.<index>.model") and QLookup (its table as I32 "ops.<index>.table"), QMul,
Transpose, Slice and ResizeNearest; older files load unchanged. Version 3 added the
float-output QLinear ("requant": null); version 2 files are the same format without it
and load unchanged. Version 1 files (requantization
always stored) are refused.

Requantization (QConv2d, QLinear, QAvgPool2d, QGlobalAvgPool, QAdd): every runtime derives it
from the float32 scales, so the file normally does not store it. Each such op's JSON entry has
"requant": "derived" when its requant equals what `intq.convert.requant` derives from the
stored scales, exactly as ProgramBuilder does (conv_requant(S_in, weight_scale, S_out),
avgpool_requant(S_in, kh·kw, S_out), global_avgpool_requant(S_in, count, S_out),
add_requant(S_a, S_b, S_out, 16 if the output dtype is 16-bit else 8)); the loader recomputes
it. Any other requant (e.g. hand-set multipliers) is stored explicitly and loaded as is:
"requant": "stored" with the three arrays above, or for QAdd "requant": a JSON object of the
AddRequant fields. A float-output QLinear (requant None) has "requant": null and no
requantization arrays. Either way load_program(save_program(p)) == p, field for field.

Weights: 8-bit as I8, 9..16-bit as I16, and b < 8 bits packed into U8: the b-bit two's
complement code of element i (row-major order) occupies bits i·b .. i·b + b - 1 of a
little-endian bit stream (bit k is bit k % 8 of byte k // 8); unused high bits of the last
byte are 0. For 4 bits: element 2k is the low nibble of byte k, element 2k+1 the high nibble.

Loading checks the format, every JSON field, every array's dtype and shape and that no array
is missing or extra, then rebuilds the program through the validating constructors. Any
defect raises ValueError naming the file and the problem. Writes are atomic (temp + replace).
"""

import json
import math
import os
from collections.abc import Mapping
from functools import partial

import numpy as np

from intq.convert.program import (
    AddRequant,
    Dequantize,
    Flatten,
    FloatOp,
    FloatSubgraph,
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
    QLookup,
    QMaxPool2d,
    QMul,
    QTensor,
    Quantize,
    Requant,
    Reshape,
    ResizeNearest,
    Slice,
    Transpose,
)
from intq.convert.requant import (
    add_requant,
    avgpool_requant,
    conv_requant,
    global_avgpool_requant,
)
from intq.outputs import write_atomic

__all__ = ["atomic_write_bytes", "load_program", "pack_bits", "save_program", "unpack_bits"]

FORMAT = "intq-program"
VERSION = "4"
READABLE_VERSIONS = ("2", "3", "4")

# Scalar (JSON) parameters of each op type beyond its inputs/output, in constructor keywords.
_PARAMS: dict[type, tuple[str, ...]] = {
    Quantize: (), Dequantize: (), Flatten: (),
    QConv2d: ("weight_zero_point", "weight_bits", "stride", "padding", "dilation", "groups"),
    QLinear: ("weight_zero_point", "weight_bits"),
    QAdd: (), QConcat: ("axis",), QAvgPool2d: ("kernel", "stride", "padding"),
    QGlobalAvgPool: ("count",), QMaxPool2d: ("kernel", "stride", "padding", "dilation"),
    Reshape: ("shape",), Pad: ("padding",), FloatOp: ("op", "attrs"),
    FloatSubgraph: ("output_shape", "source"), QLookup: ("function", "params"), QMul: (),
    Transpose: ("perm",), Slice: ("axis", "start", "stop", "step"), ResizeNearest: ("factors",),
}
_TYPES = {cls.__name__: cls for cls in _PARAMS}
_REQUANT_ARRAYS = {"multiplier_f32": "F32", "m0": "I32", "shift": "I32"}
_REQUANT_OPS = (QConv2d, QLinear, QAvgPool2d, QGlobalAvgPool, QAdd)


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack signed `bits`-bit integers (row-major) LSB-first into uint8 (see module docstring)."""
    codes = np.asarray(values, dtype=np.int64).ravel() & ((1 << bits) - 1)
    planes = ((codes[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of pack_bits: `count` signed `bits`-bit integers as int64."""
    stream = np.unpackbits(np.asarray(packed, dtype=np.uint8), bitorder="little")
    if len(packed) != math.ceil(count * bits / 8) or stream[count * bits:].any():
        raise ValueError(f"packed weights: expected {math.ceil(count * bits / 8)} bytes with "
                         f"zero padding bits for {count} {bits}-bit values, got {len(packed)}")
    planes = stream[:count * bits].reshape(count, bits).astype(np.int64)
    codes = (planes << np.arange(bits)).sum(axis=1)
    return codes - ((codes >> (bits - 1)) << bits)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (``intq.outputs.write_atomic``)."""
    write_atomic(path, data)


def save_program(program: IntProgram, path: str | os.PathLike) -> None:
    """Write `program` to `path` (safetensors + JSON metadata, atomic)."""
    from safetensors.numpy import save

    arrays: dict[str, np.ndarray] = {}
    doc = {
        "inputs": [{"name": i.name, "shape": list(i.shape)} for i in program.inputs],
        "outputs": list(program.outputs),
        "tensors": {name: {"scale": t.scale, "zero_point": t.zero_point, "dtype": t.dtype,
                           "qmin": t.qmin, "qmax": t.qmax}
                    for name, t in program.tensors.items()},
        "ops": [_encode_op(op, f"ops.{i}", arrays, program.tensors)
                for i, op in enumerate(program.ops)],
        "metadata": dict(program.metadata),
    }
    header = {"intq.format": FORMAT, "intq.version": VERSION,
              "intq.program": json.dumps(doc, allow_nan=False)}
    atomic_write_bytes(path, _sorted_metadata(save(arrays, metadata=header)))


def _sorted_metadata(data: bytes) -> bytes:
    """The safetensors file ``data`` with its ``__metadata__`` keys sorted: safetensors writes
    them in hash-map order, which changes from process to process (equal programs would give
    different bytes). The header stays compact JSON padded with spaces to 8 bytes."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def load_program(path: str | os.PathLike) -> IntProgram:
    """Read and validate a program written by save_program; ValueError if malformed."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            header = f.metadata() or {}
            arrays = {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as err:
        raise ValueError(f"{path}: not a valid safetensors file ({err})") from None
    if header.get("intq.format") != FORMAT:
        raise ValueError(f"{path}: not an intq program (intq.format is "
                         f"{header.get('intq.format')!r}, expected {FORMAT!r})")
    if header.get("intq.version") not in READABLE_VERSIONS:
        raise ValueError(f"{path}: intq program format version {header.get('intq.version')!r} "
                         f"is not supported; this intq reads versions "
                         f"{', '.join(READABLE_VERSIONS)}: convert the model again and save "
                         f"it with this intq")
    try:
        return _decode_program(json.loads(header["intq.program"]), arrays)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as err:
        raise ValueError(f"{path}: malformed intq program: {type(err).__name__}: {err}") from None


def _encode_op(op: Op, key: str, arrays: dict[str, np.ndarray],
               tensors: Mapping[str, QTensor]) -> dict:
    if isinstance(op, FloatOp) and op.op == "callable":
        raise ValueError(f"{op.label}: a callable FloatOp cannot be saved (only FLOAT_OPS names)")
    entry = {"type": type(op).__name__, "inputs": list(op.inputs), "output": op.output}
    for name in _PARAMS[type(op)]:
        value = getattr(op, name)
        entry[name] = dict(value) if name == "attrs" else value
    if isinstance(op, QConv2d | QLinear):
        entry["weight_shape"] = list(op.weight.shape)
        entry["has_bias"] = op.bias is not None
        bits = op.weight_bits
        arrays[f"{key}.weight"] = (pack_bits(op.weight, bits) if bits < 8 else
                                   np.ascontiguousarray(op.weight))
        arrays[f"{key}.weight_scale"] = op.weight_scale
        if op.bias is not None:
            arrays[f"{key}.bias"] = op.bias
    if isinstance(op, FloatSubgraph):
        arrays[f"{key}.model"] = np.frombuffer(op.model, np.uint8)
    if isinstance(op, QLookup):
        arrays[f"{key}.table"] = op.table
    if isinstance(op, _REQUANT_OPS):
        entry["requant"] = (None if op.requant is None
                            else _encode_requant(op, key, arrays, tensors))
    return entry


def _encode_requant(op: Op, key: str, arrays: dict[str, np.ndarray],
                    tensors: Mapping[str, QTensor]) -> str | dict:
    """'derived' if _derive_requant gives exactly op.requant, else op.requant stored."""
    try:
        derived = _derive_requant(type(op), [tensors[n] for n in op.inputs],
                                  tensors[op.output], _requant_detail(op))
    except ValueError:
        derived = None
    if derived == op.requant:
        return "derived"
    if isinstance(op, QAdd):
        return {name: getattr(op.requant, name) for name in AddRequant.__dataclass_fields__}
    for name in _REQUANT_ARRAYS:
        arrays[f"{key}.requant.{name}"] = getattr(op.requant, name)
    return "stored"


def _requant_detail(op: Op):
    """The non-scale input of the requant derivation: weight_scale, or the pool's tap count."""
    if isinstance(op, QConv2d | QLinear):
        return op.weight_scale
    if isinstance(op, QAvgPool2d):
        return op.kernel[0] * op.kernel[1]
    if isinstance(op, QGlobalAvgPool):
        return op.count
    return None


def _derive_requant(cls: type, inputs: list[QTensor], out: QTensor, detail):
    """The requant ProgramBuilder derives for an op of type `cls` (see the module docstring)."""
    if cls is QAdd:
        bits = 16 if out.dtype.endswith("16") else 8
        return add_requant(inputs[0].scale, inputs[1].scale, out.scale, bits)
    if cls is QAvgPool2d:
        return avgpool_requant(inputs[0].scale, detail, out.scale)
    if cls is QGlobalAvgPool:
        return global_avgpool_requant(inputs[0].scale, detail, out.scale)
    return conv_requant(inputs[0].scale, detail, out.scale)


def _decode_program(doc: dict, arrays: dict[str, np.ndarray]) -> IntProgram:
    _keys(doc, {"inputs", "outputs", "tensors", "ops", "metadata"}, "program")
    used: set[str] = set()
    inputs = tuple(Input(_str(i["name"]), tuple(_list(i["shape"]))) for i in _list(doc["inputs"]))
    tensors = {}
    for name, t in _dict(doc["tensors"]).items():
        _keys(t, {"scale", "zero_point", "dtype", "qmin", "qmax"}, f"tensor {name!r}")
        if not isinstance(t["scale"], float | int) or isinstance(t["scale"], bool):
            raise ValueError(f"tensor {name!r}: scale must be a number")
        tensors[_str(name)] = QTensor(float(t["scale"]), t["zero_point"], t["dtype"],
                                      t["qmin"], t["qmax"])
    ops = tuple(_decode_op(_dict(e), f"ops.{i}", arrays, used, tensors)
                for i, e in enumerate(_list(doc["ops"])))
    extra = set(arrays) - used
    if extra:
        raise ValueError(f"unexpected arrays {sorted(extra)}")
    metadata = {_str(k): _str(v) for k, v in _dict(doc["metadata"]).items()}
    return IntProgram(inputs, tuple(_str(o) for o in _list(doc["outputs"])), tensors, ops,
                      metadata)


def _decode_op(entry: dict, key: str, arrays: dict[str, np.ndarray], used: set[str],
               tensors: dict[str, QTensor]) -> Op:
    cls = _TYPES.get(entry.get("type"))
    if cls is None:
        raise ValueError(f"{key}: unknown op type {entry.get('type')!r}")
    expected = {"type", "inputs", "output", *_PARAMS[cls]}
    if cls in (QConv2d, QLinear):
        expected |= {"weight_shape", "has_bias"}
    if cls in _REQUANT_OPS:
        expected.add("requant")
    _keys(entry, expected, key)
    inputs = [_str(n) for n in _list(entry["inputs"])]
    output = _str(entry["output"])
    params = {name: entry[name] for name in _PARAMS[cls]}
    requant = partial(_decode_requant, cls, entry.get("requant"), key, arrays, used, tensors,
                      inputs, output)
    if cls is FloatOp:
        return FloatOp(tuple(inputs), output, _str(params["op"]), _dict(params["attrs"]))
    if cls is FloatSubgraph:
        shape = params["output_shape"]
        model = _array(arrays, f"{key}.model", "U8", None, used).tobytes()
        return FloatSubgraph(tuple(inputs), output, model,
                             None if shape is None else tuple(_list(shape)),
                             _str(params["source"]))
    if cls is QMul:
        if len(inputs) != 2:
            raise ValueError(f"{key}: QMul needs 2 inputs")
        return QMul(inputs[0], inputs[1], output)
    if cls is QConcat:
        return QConcat(tuple(inputs), output, params["axis"])
    if cls is QAdd:
        if len(inputs) != 2:
            raise ValueError(f"{key}: QAdd needs 2 inputs")
        return QAdd(inputs[0], inputs[1], output, requant(None))
    if len(inputs) != 1:
        raise ValueError(f"{key}: {cls.__name__} takes one input, got {len(inputs)}")
    if cls in (QConv2d, QLinear):
        return _decode_weighted(cls, inputs[0], output, entry, params, key, arrays, used,
                                requant)
    if cls is QAvgPool2d:
        return QAvgPool2d(inputs[0], output, params["kernel"],
                          requant(_kernel_taps(params["kernel"], key)),
                          stride=params["stride"], padding=params["padding"])
    if cls is QGlobalAvgPool:
        return QGlobalAvgPool(inputs[0], output, params["count"], requant(params["count"]))
    if cls is QMaxPool2d:
        return QMaxPool2d(inputs[0], output, params.pop("kernel"), **params)
    if cls is QLookup:
        table = _array(arrays, f"{key}.table", "I32", (256,), used)
        return QLookup(inputs[0], output, table, _str(params["function"]),
                       tuple(_list(params["params"])))
    return cls(inputs[0], output, *params.values())


def _decode_weighted(cls, input_name, output, entry, params, key, arrays, used,
                     requant) -> Op:
    shape = tuple(_list(entry["weight_shape"]))
    if len(shape) != (4 if cls is QConv2d else 2) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ValueError(f"{key}: bad weight_shape {shape}")
    bits = params["weight_bits"]
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"{key}: weight_bits must be an int in 2..16, got {bits!r}")
    count = math.prod(shape)
    if bits < 8:
        packed = _array(arrays, f"{key}.weight", "U8", (math.ceil(count * bits / 8),), used)
        weight = unpack_bits(packed, bits, count).reshape(shape)
    else:
        weight = _array(arrays, f"{key}.weight", "I8" if bits == 8 else "I16", shape, used)
    out_channels = shape[0]
    scale = _array(arrays, f"{key}.weight_scale", "F32", None, used)
    bias = None
    if entry["has_bias"] is True:
        bias = _array(arrays, f"{key}.bias", "I32", (out_channels,), used)
    elif entry["has_bias"] is not False:
        raise ValueError(f"{key}: has_bias must be true or false")
    return cls(input_name, output, weight, scale, requant(scale), bias=bias, **params)


def _decode_requant(cls: type, spec, key: str, arrays, used: set[str],
                    tensors: dict[str, QTensor], inputs: list[str], output: str, detail):
    """The op's requant: recomputed from the scales ("derived"), read as stored, or None
    (null: a float-output QLinear)."""
    if spec is None and cls is QLinear:
        return None
    if spec == "derived":
        return _derive_requant(cls, [_tensor(tensors, n, key) for n in inputs],
                               _tensor(tensors, output, key), detail)
    if cls is QAdd and isinstance(spec, dict):
        _keys(spec, set(AddRequant.__dataclass_fields__), f"{key}.requant")
        return AddRequant(**spec)
    if cls is not QAdd and spec == "stored":
        parts = {name: _array(arrays, f"{key}.requant.{name}", dtype, None, used)
                 for name, dtype in _REQUANT_ARRAYS.items()}
        return Requant(**parts)
    stored = "an object of AddRequant fields" if cls is QAdd else "'stored'"
    null = ", or null (float output)" if cls is QLinear else ""
    raise ValueError(f"{key}: requant must be 'derived' or {stored}{null}, got {spec!r}")


def _kernel_taps(kernel, key: str) -> int:
    """kh·kw of a saved [kh, kw] pool kernel."""
    if not (isinstance(kernel, list) and len(kernel) == 2 and all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in kernel)):
        raise ValueError(f"{key}: kernel must be [kh, kw] ints >= 1, got {kernel!r}")
    return kernel[0] * kernel[1]


def _tensor(tensors: dict[str, QTensor], name: str, key: str) -> QTensor:
    if name not in tensors:
        raise ValueError(f"{key}: {name!r} is not an integer tensor of the program")
    return tensors[name]


_DTYPES = {"U8": np.uint8, "I8": np.int8, "I16": np.int16, "I32": np.int32, "F32": np.float32}


def _array(arrays, key: str, dtype: str, shape, used: set[str]) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"missing array {key!r}")
    a = arrays[key]
    if a.dtype != np.dtype(_DTYPES[dtype]).newbyteorder("<") or (
            shape is not None and a.shape != tuple(shape)):
        raise ValueError(f"array {key!r}: expected {dtype} {shape}, got {a.dtype} {a.shape}")
    if a.ndim == 0 or (shape is None and a.ndim != 1):
        raise ValueError(f"array {key!r}: expected a 1-D array, got shape {a.shape}")
    used.add(key)
    return a


def _keys(d: dict, expected: set[str], where: str) -> None:
    if not isinstance(d, dict) or set(d) != expected:
        got = sorted(d) if isinstance(d, dict) else type(d).__name__
        raise ValueError(f"{where}: expected keys {sorted(expected)}, got {got}")


def _list(v) -> list:
    if not isinstance(v, list):
        raise ValueError(f"expected a JSON list, got {type(v).__name__}")
    return v


def _dict(v) -> dict:
    if not isinstance(v, dict):
        raise ValueError(f"expected a JSON object, got {type(v).__name__}")
    return v


def _str(v) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected a string, got {v!r}")
    return v
