"""Convert a calibrated quantized graph (PTQ or QAT) into an IntProgram.

The converter walks the fx graph in order and emits one IntProgram op per node; it reads the
frozen quantizers, never re-estimates anything, so the program computes what the simulation
simulated (same weight integers, same int32 bias grid, same output grids and clamps):
- placeholder + its quantizer -> Quantize; output -> Dequantize of each integer output (a
  float output is returned as is);
- QuantConv2d / QuantLinear + the quantizer after it -> QConv2d / QLinear, weights quantized
  half-to-even with the weight quantizer's qparams, bias round_half_even(b / (S_in·S_w)),
  fused ReLU/ReLU6 as the output clamp;
- a float-output linear (``intq.graph.place.is_float_output_linear``: no quantizer after
  it) -> a float-output QLinear (requant None), float32(acc)·float32(S_in·S_w[c]); the
  flatten/reshape between it and the graph output then run on float32;
- FusedAdd, avg_pool2d, adaptive_avg_pool2d(1) + quantizer -> QAdd / QAvgPool2d /
  QGlobalAvgPool; max pool (ceil mode as extra bottom/right padding), cat, flatten, reshape,
  zero pad -> the lossless ops (a zero pad read only by a conv becomes part of that conv's
  padding, which also pads with the zero point); a standalone relu/relu6 -> Dequantize +
  Quantize onto the same grid with the clamp (exact: the float32 round trip returns every integer);
- elementwise functions of one tensor (hardswish, sigmoid, SiLU, GELU, x·c, ...) + the
  quantizer after them -> QLookup, the table computed in torch from the 256 input codes:
  table[q] = quantize_half_even(f(float32((q - Z_in)·S_in))) on the output grid;
- a product of two activations -> QMul; permute, channel slice, nearest resize -> the
  lossless Transpose / Slice / ResizeNearest;
- a float node (no integer form, a leaf module, a layer the recipe keeps in float) -> a float
  island: Dequantize of its integer inputs, a FloatSubgraph holding the node exported to ONNX
  (`intq.convert.float_island`), then the Quantize of the quantizer after it when an integer
  op reads it. A node that torch.onnx cannot export becomes a FloatOp "callable" running the
  torch code: the reference interpreter runs it, the ONNX writer refuses it, and
  `float_islands` says why.
Weight-only recipes have no integer form: they raise an IntqError saying so.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from intq.convert.builder import ProgramBuilder
from intq.convert.float_island import cut_node, island_model
from intq.convert.lookup_onnx import table_from_onnx_runtime
from intq.convert.program import IntProgram, QTensor
from intq.errors import IntqError
from intq.fakequant import Quantizer
from intq.graph._fx import EXAMPLE_INPUTS, shape_of
from intq.graph._indexing import resize_factors, slice_of
from intq.graph.capture import AUTO_LEAVES
from intq.graph.fused import FusedAdd, FusedConv2d, FusedLinear, activation_range
from intq.graph.kinds import OpKind, float_reason, is_constant_expression, op_kind
from intq.graph.place import ACT_PREFIX, is_float_node, is_float_output_linear
from intq.graph.qmodules import QuantConv2d, QuantLinear
from intq.qmath import quantize_half_even, round_half_even

__all__ = ["ISLANDS_KEY", "FloatIsland", "convert_to_program", "float_islands", "qtensor_of"]

#: program metadata key: JSON list of the FloatIsland records
ISLANDS_KEY = "intq.float_islands"

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_DTYPES = {(True, 8): "int8", (False, 8): "uint8", (True, 16): "int16", (False, 16): "uint16"}


def convert_to_program(qgm: fx.GraphModule, input_shape: tuple[int, ...]) -> IntProgram:
    """The IntProgram of the calibrated quantized graph ``qgm`` for inputs (N, *input_shape)."""
    empty = [name for name, m in qgm.named_modules() if isinstance(m, Quantizer)
             and not m.has_qparams]
    if empty:
        raise ValueError(f"convert_to_program: {len(empty)} quantizer(s) have no scale yet "
                         f"(first: {empty[0]}); calibrate (intq.ptq.calibrate) or train first")
    _propagate_shapes(qgm, input_shape)
    return _Converter(qgm).run(input_shape)


@dataclass(frozen=True)
class FloatIsland:
    """A node that runs in float in the integer program: where it is and why."""

    node: str
    op: str
    reason: str
    source: str
    exported: bool
    why_not: str

    def describe(self) -> str:
        where = f" at {self.source}" if self.source else ""
        how = "" if self.exported else f"; not exportable: {self.why_not}"
        return f"{self.node} ({self.op}{where}): {self.reason}{how}"


def float_islands(program: IntProgram) -> list[FloatIsland]:
    """The float islands of a program made by `convert_to_program`, in op order."""
    return [FloatIsland(**entry) for entry in json.loads(program.metadata.get(ISLANDS_KEY, "[]"))]


def _propagate_shapes(qgm: fx.GraphModule, input_shape: tuple[int, ...]) -> None:
    """Shapes on every node of ``qgm`` (quantizers included), observers paused."""
    inputs = qgm.meta.get(EXAMPLE_INPUTS) or (torch.zeros(2, *input_shape),)
    quantizers = [m for m in qgm.modules() if isinstance(m, Quantizer)]
    saved = [q.observe for q in quantizers]
    for q in quantizers:
        q.observe = False
    try:
        with torch.no_grad():
            ShapeProp(qgm).propagate(*inputs)
    except Exception:  # noqa: BLE001 - the shapes stay as captured; islands then say so
        pass
    finally:
        for q, flag in zip(quantizers, saved, strict=True):
            q.observe = flag


def qtensor_of(q: Quantizer, activation: str | None = None) -> QTensor:
    """The QTensor of an activation quantizer; ``activation`` adds the fused clamp."""
    spec = q.spec
    container_bits = 8 if spec.bits <= 8 else 16
    dtype = _DTYPES[(spec.signed, container_bits)]
    scale, zp = float(q.scale.reshape(-1)[0]), int(q.zero_point.reshape(-1)[0])
    return _clamped(QTensor(scale, zp, dtype, spec.qmin, spec.qmax), activation)


def _clamped(qt: QTensor, activation: str | None) -> QTensor:
    """``qt`` with its [qmin, qmax] narrowed to ``activation``'s clamp [max(qmin, Z),
    min(qmax, Z + round(6/S))] (relu6)."""
    clamp = activation_range(activation)
    if clamp is None:
        return qt
    qmin, qmax = max(qt.qmin, qt.zero_point), qt.qmax
    if clamp[1] is not None:
        high = round_half_even(torch.tensor(clamp[1] / qt.scale)).item()
        qmax = min(qmax, qt.zero_point + int(high))
    return QTensor(qt.scale, qt.zero_point, qt.dtype, qmin, qmax)


class _Converter:
    def __init__(self, qgm: fx.GraphModule) -> None:
        self.gm = qgm
        self.b = ProgramBuilder()
        self.names: dict[fx.Node, str] = {}
        self.folded_pads: dict[fx.Node, tuple[int, int, int, int]] = {}
        self.dequantized: dict[str, str] = {}
        self.islands: list[FloatIsland] = []

    def run(self, input_shape: tuple[int, ...]) -> IntProgram:
        outputs: list[str] = []
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.names[node] = self.b.input(node.name, (None, *input_shape))
            elif node.op == "output":
                outputs = [self._output(arg) for arg in _flat(node.args[0])]
            elif _carries_a_tensor(node) and not is_constant_expression(node):
                self.names[node] = self._emit(node)
        islands = json.dumps([asdict(i) for i in self.islands])
        return self.b.build(outputs, {"producer": "intq", ISLANDS_KEY: islands})

    def _output(self, node: fx.Node) -> str:
        """The float tensor returned for graph output ``node``: Dequantize of an integer one."""
        name = self.names[node]
        if self.b.is_float(name):
            return name
        return self.b.dequantize(name, name=f"{node.name}_float")

    def _emit(self, node: fx.Node) -> str:
        if node.op == "call_module" and isinstance(self.gm.get_submodule(node.target), Quantizer):
            return self._emit_quantizer(node, self.gm.get_submodule(node.target))
        if is_float_node(self.gm, node):
            return self._float_island(node)
        if node.op == "call_module":
            return self._emit_module(node, self.gm.get_submodule(node.target))
        if node.op == "call_function":
            return self._emit_function(node)
        raise self._unsupported(node)

    def _emit_module(self, node: fx.Node, module) -> str:
        x = self.names[node.args[0]]
        if is_float_output_linear(self.gm, node) and module.input_quantizer is not None:
            return self._linear(node, module, x, None)  # (weight-only: error below)
        out = self._output_qtensor(node, getattr(module, "activation", None))
        if isinstance(module, QuantConv2d):
            return self._conv(node, module, x, out)
        if isinstance(module, QuantLinear):
            return self._linear(node, module, x, out)
        if isinstance(module, FusedAdd):
            return self.b.add(x, self.names[node.args[1]], out, name=node.name)
        raise self._unsupported(node)

    def _linear(self, node: fx.Node, module: QuantLinear, x: str, out: QTensor | None) -> str:
        """QLinear with an integer output on ``out``, or the float-output form if None."""
        w, w_scale, w_zp, bias = self._layer_integers(module)
        return self.b.linear(x, w, w_scale, out, bias=bias, weight_zero_point=w_zp,
                             weight_bits=module.weight_quantizer.spec.bits, name=node.name)

    def _conv(self, node: fx.Node, module: QuantConv2d, x: str, out: QTensor) -> str:
        c = module.layer
        w, w_scale, w_zp, bias = self._layer_integers(module)
        ph, pw = c.padding
        top, left, bottom, right = self.folded_pads.pop(node.args[0], (0, 0, 0, 0))
        padding = (ph + top, pw + left, ph + bottom, pw + right)
        return self.b.conv2d(x, w, w_scale, out, bias=bias, stride=c.stride, padding=padding,
                             dilation=c.dilation, groups=c.groups, weight_zero_point=w_zp,
                             weight_bits=module.weight_quantizer.spec.bits, name=node.name)

    def _float_island(self, node: fx.Node) -> str:
        """A float island for ``node``: its ONNX export, or a torch callable if that fails."""
        record = dict(node=node.name, op=_op_name(self.gm, node), reason=_reason(self.gm, node),
                      source=_source_line(node))
        try:
            island = island_model(self.gm, node)
        except ValueError as err:
            self.islands.append(FloatIsland(**record, exported=False, why_not=str(err)))
            sub, tensors = cut_node(self.gm, node)
            inputs = [self._float_of(self.names[n]) for n in tensors]
            shape = shape_of(node)
            return self.b.float_op(inputs, "callable", fn=_numpy_function(sub), name=node.name,
                                   shape=None if shape is None else (None, *shape[1:]))
        self.islands.append(FloatIsland(**record, exported=True, why_not=""))
        inputs = [self._float_of(self.names[n]) for n in island.inputs]
        return self.b.float_subgraph(inputs, island.model, island.output_shape,
                                     self.islands[-1].describe(), name=node.name)

    def _float_of(self, name: str) -> str:
        if self.b.is_float(name):
            return name
        if name not in self.dequantized:
            self.dequantized[name] = self.b.dequantize(name, name=f"{name}_dequantized")
        return self.dequantized[name]

    def _emit_quantizer(self, node: fx.Node, q: Quantizer) -> str:
        source = self.names[node.args[0]]
        if self.b.is_float(source):  # a program input or the output of a float region
            return self.b.quantize(source, qtensor_of(q), name=node.name)
        return source  # the requantizing op before it already wrote this grid

    def _emit_function(self, node: fx.Node) -> str:
        target, args, kw = node.target, node.args, node.kwargs
        x = self.names.get(args[0]) if isinstance(args[0], fx.Node) else None
        if target is F.max_pool2d:
            return self._max_pool(node, x)
        if target is F.avg_pool2d:
            return self._avg_pool(node, x)
        if target is F.adaptive_avg_pool2d:
            if self.b.shape(x) is None:
                raise IntqError(f"global average pool {node.name} follows a float region whose "
                                "output shape the integer program cannot know; keep the pool "
                                "in the float region or move the region after it")
            return self.b.global_avg_pool(x, self._output_qtensor(node), name=node.name)
        if target in (F.relu, F.relu6):
            return self._clamp(node, x, "relu" if target is F.relu else "relu6")
        kind = op_kind(self.gm, node)
        if kind == OpKind.LOOKUP:
            return self._lookup(node, x)
        if kind == OpKind.MUL:
            return self.b.mul(x, self.names[args[1]], self._output_qtensor(node), name=node.name)
        if kind == OpKind.TRANSPOSE:
            return self.b.transpose(x, args[1], name=node.name)
        if kind == OpKind.SLICE:
            return self.b.slice(x, *slice_of(node), name=node.name)
        if kind == OpKind.RESIZE_NEAREST:
            return self.b.resize_nearest(x, resize_factors(node), name=node.name)
        if target is torch.cat:
            dim = args[1] if len(args) > 1 else kw.get("dim", 0)
            return self.b.concat([self.names[a] for a in args[0]], dim, name=node.name)
        if target is torch.flatten:
            return self.b.flatten(x, name=node.name)
        if target is torch.reshape:
            return self.b.reshape(x, args[1], name=node.name)
        if target is F.pad:
            left, right, top, bottom = args[1]
            if self._feeds_only_a_conv(node):  # zero-point padding is the conv's own padding
                self.folded_pads[node] = (top, left, bottom, right)
                return x
            return self.b.pad(x, (top, left, bottom, right), name=node.name)
        raise self._unsupported(node)

    def _lookup(self, node: fx.Node, x: str) -> str:
        """QLookup: f on the 256 codes of ``x`` onto the output grid, as ONNX Runtime computes
        DequantizeLinear -> f -> QuantizeLinear when f has an ONNX spelling
        (`intq.convert.lookup_onnx`), else in torch with half-even rounding."""
        tensor = next(a for a in node.args if isinstance(a, fx.Node))
        x = self.names[tensor]
        qx, qy = self.b.qtensor(x), self._output_qtensor(node)
        function, params = _lookup_function(node, tensor)
        table = table_from_onnx_runtime(function, params, qx, qy)
        if table is None:
            table = _torch_table(node, tensor, qx, qy)
        return self.b.lookup(x, table, qy, function=function, params=params, name=node.name)

    def _feeds_only_a_conv(self, node: fx.Node) -> bool:
        users = list(node.users)
        return (len(users) == 1 and users[0].op == "call_module"
                and isinstance(self.gm.get_submodule(users[0].target), QuantConv2d))

    def _max_pool(self, node: fx.Node, x: str) -> str:
        """Max pool; ceil mode is floor mode with extra bottom/right padding (never selected)."""
        kw = node.kwargs
        kernel, stride, dilation = kw["kernel_size"], kw["stride"], kw["dilation"]
        pad_h, pad_w = kw["padding"]
        extra = (0, 0)
        if kw.get("ceil_mode"):
            shape = self.b.shape(x)
            if shape is None:
                raise IntqError(f"max pool {node.name}: ceil mode needs the input size, which "
                                "a float region before it hides")
            extra = tuple(_ceil_mode_extra(*args) for args in zip(
                shape[2:], kernel, stride, (pad_h, pad_w), dilation, strict=True))
        return self.b.max_pool2d(x, kernel, stride=stride, dilation=dilation,
                                 padding=(pad_h, pad_w, pad_h + extra[0], pad_w + extra[1]),
                                 name=node.name)

    def _clamp(self, node: fx.Node, x: str, activation: str) -> str:
        """A relu/relu6 on an integer tensor: Dequantize, then Quantize onto the same grid with
        the clamp as [qmin, qmax] (float32((q - Z)·S) / S rounds back to q - Z exactly)."""
        out = _clamped(self.b.qtensor(x), activation)
        return self.b.quantize(self._float_of(x), out, name=node.name)

    def _avg_pool(self, node: fx.Node, x: str) -> str:
        kw = node.kwargs
        if kw.get("ceil_mode") or not kw.get("count_include_pad", True) or kw.get(
                "divisor_override"):
            raise IntqError(f"average pool {node.name}: only floor mode with "
                            "count_include_pad=True has an integer form here")
        return self.b.avg_pool2d(x, kw["kernel_size"], self._output_qtensor(node),
                                 stride=kw["stride"], padding=kw["padding"], name=node.name)

    def _output_qtensor(self, node: fx.Node, activation: str | None = None) -> QTensor:
        """The grid of the quantizer right after ``node`` (its only reader)."""
        users = list(node.users)
        if len(users) != 1 or not str(users[0].target).startswith(f"{ACT_PREFIX}."):
            raise IntqError(
                f"node {node.name} has no activation quantizer after it; integer conversion "
                "needs a recipe that quantizes activations (not --weight-only)"
            )
        return qtensor_of(self.gm.get_submodule(users[0].target), activation)

    def _layer_integers(self, module: QuantConv2d | QuantLinear):
        """(int weights, float32 weight scales, weight zero point, int32 bias or None)."""
        wq = module.weight_quantizer
        spec, weight = wq.spec, module.layer.weight.detach()
        axis = spec.axis if spec.per_channel else None
        if spec.per_channel and not spec.symmetric:
            raise IntqError("asymmetric per-channel weights have no integer form here (one weight "
                            "zero point per tensor); use a symmetric per-channel recipe")
        scale = wq.scale.reshape(-1)
        zp = wq.zero_point.reshape(-1)
        w_int = quantize_half_even(weight, wq.scale, wq.zero_point, spec.qmin, spec.qmax, axis)
        bias = None
        if module.layer.bias is not None:
            s_in = module.input_quantizer.scale.double()
            acc_scale = s_in * scale.double()
            b = round_half_even(module.layer.bias.detach().double() / acc_scale)
            bias = b.clamp(_INT32_MIN, _INT32_MAX).numpy().astype(np.int32)
        w_np = w_int.numpy().astype(np.int32 if spec.bits > 8 else np.int8)
        return w_np, scale.numpy().astype(np.float32), int(zp[0]), bias

    def _unsupported(self, node: fx.Node) -> IntqError:
        return IntqError(
            f"node {node.name} ({node.target}) has no integer form; keep it in float with "
            "leaf_modules=[...] or change the model"
        )


def _ceil_mode_extra(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Padding to add after the input so that floor mode gives PyTorch's ceil-mode size:
    ceil((size + 2·pad - span) / stride) + 1 windows, minus the last one if it would start
    in the trailing padding."""
    span = dilation * (kernel - 1) + 1
    out = -(-(size + 2 * pad - span) // stride) + 1
    if (out - 1) * stride >= size + pad:
        out -= 1
    return (out - 1) * stride + span - (size + 2 * pad)


def _numpy_function(module: nn.Module) -> Callable[..., np.ndarray]:
    """``module`` as a function of float32 numpy arrays (a FloatOp "callable")."""

    def run(*arrays: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = module(*(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays))
        return out.numpy()

    return run


_FRAME = re.compile(r'File "(?P<path>[^"]+)", line (?P<line>\d+)')
_LIBRARY_DIRS = (os.path.dirname(torch.__file__), os.path.dirname(os.path.dirname(__file__)))


def _lookup_function(node: fx.Node, tensor: fx.Node) -> tuple[str, tuple]:
    """(function name, params) of a lookup node (see intq.convert.lookup_onnx)."""
    name = getattr(node.target, "__name__", str(node.target))
    constants = [a for a in node.args if a is not tensor]
    if name in ("add", "sub", "mul", "truediv"):
        return name, (float(constants[0]), node.args.index(tensor))
    if name == "clamp":
        return name, tuple(None if node.kwargs.get(k) is None else float(node.kwargs[k])
                           for k in ("min", "max"))
    if name == "gelu":
        return name, (node.kwargs.get("approximate", "none"),)
    return name, tuple(float(c) for c in constants)


def _torch_table(node: fx.Node, tensor: fx.Node, qx: QTensor, qy: QTensor) -> np.ndarray:
    """f on the 256 codes in torch (float32), quantized half-even onto qy's grid."""
    low = np.iinfo(qx.dtype).min
    codes = torch.arange(low, low + 256, dtype=torch.float64)
    real = ((codes - qx.zero_point) * np.float32(qx.scale)).float()
    args = tuple(real if a is tensor else a for a in node.args)
    with torch.no_grad():
        y = node.target(*args, **node.kwargs).double()
    q = round_half_even(y / np.float32(qy.scale)) + qy.zero_point
    return q.clamp(qy.qmin, qy.qmax).numpy().astype(np.int32)


def _op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """What ``node`` computes: a module class, a Tensor method or a function name."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return getattr(node.target, "__name__", str(node.target))


def _reason(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module" and isinstance(gm.get_submodule(node.target),
                                               FusedConv2d | FusedLinear):
        return "kept in float by the recipe (--keep-float)"
    untraceable = gm.meta.get(AUTO_LEAVES, {}).get(node.target)
    if node.op == "call_module" and untraceable:
        return f"torch.fx cannot trace it: {untraceable}"
    return float_reason(gm, node)


def _source_line(node: fx.Node) -> str:
    """``file:line `code``` of the innermost user code (not torch, not intq) that made
    ``node``, from the stack the trace recorded; "" if unknown."""
    lines = (node.meta.get("stack_trace") or "").splitlines()
    found = ""
    for k, line in enumerate(lines):
        match = _FRAME.match(line.strip())
        if match and not match["path"].startswith(_LIBRARY_DIRS):
            code = lines[k + 1].strip() if k + 1 < len(lines) else ""
            found = f"{os.path.basename(match['path'])}:{match['line']}" + (
                f" `{code}`" if code else "")
    return found


def _carries_a_tensor(node: fx.Node) -> bool:
    """False for nodes known to hold no tensor (a tuple a getitem reads, shape arithmetic):
    the islands that read them take them in; True when unknown."""
    meta = node.meta.get("tensor_meta")
    return meta is None or isinstance(meta, TensorMetadata)


def _flat(arg) -> list[fx.Node]:
    return list(arg) if isinstance(arg, list | tuple) else [arg]
