"""Which ONNX encoding and integer types make intq's ONNX Runtime models exact and fast.

What it measures, with onnxruntime on this CPU, 1 intra-op thread, batch 1, median time of
`--repeats` runs after warm-up. Times are CPU time of the calling thread (`time.thread_time`):
with one intra-op thread ONNX Runtime computes on the caller, so the waits for a core that
other processes on this shared machine cause do not count.

1. Saturation table: single QLinearConv/QGemm layers with random full-range inputs, for the
   activation x weight types u8 x s8 (8-bit [-127, 127]), u8 x s8 7-bit ([-63, 63]),
   u8 x u8 (zero point 128) and s8 x s8; the fraction of outputs that differ from exact
   integer math (float32 requantization of the exact accumulator) and the largest error.
   Shapes: DESIGN.md's 1x1 96->24 at 112x112, a 3x3 64->64 at 56x56, a depthwise 3x3 144 at
   56x56 and a 1280->1000 fully connected layer.
2. Encoding comparison on a MobileNet-v2 (224x224, width 1.0) IntProgram with random weights:
   intq's QOperator export (weight_type auto = u8 for 8-bit weights, s8, and 7-bit weights
   where auto picks s8) against the QDQ encoding of the same program (QuantizeLinear /
   DequantizeLinear around float ops, which ONNX Runtime fuses) and a float32 model of the same
   net, timed in turns. Each integer model's output is compared with the reference
   interpreter (fraction of identical outputs).
3. Channel padding of a conv with input channels not a multiple of 4 (what export_onnx does
   for a stem conv so that MLAS runs it on its symmetric ConvSym kernel): float input ->
   QuantizeLinear -> QLinearConv (int8 per-channel weights, zero point 0), against the same
   with a Pad of the quantized input (zero point) and zero weights for the added channels;
   and the same pair behind a 1x1 conv (mid-network: ORT keeps that tensor channels-last, so
   the Pad runs on the last axis). Timed in turns; outputs must be identical.

Writes benchmarks/results/onnx_kernels.{json,md}.

    .venv/bin/python benchmarks/onnx_kernels.py [--repeats 30]
"""

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from intq.convert import (
    Dequantize,
    Flatten,
    IntProgram,
    QAdd,
    QConv2d,
    QGlobalAvgPool,
    QLinear,
    Quantize,
    infer_shapes,
)
from intq.convert.serialize import atomic_write_bytes
from intq.convert.synthetic import mobilenet_v2_like
from intq.export import export_onnx
from intq.runtime import run_reference
from intq.runtime.onnxruntime import cpu_has_vnni

RESULTS = Path(__file__).parent / "results"
WEIGHT_CASES = {  # name: (activation dtype, weight dtype, weight range, weight zero point)
    "u8 x s8 [-127,127]": (np.uint8, np.int8, (-127, 127), 0),
    "u8 x s8 7-bit [-63,63]": (np.uint8, np.int8, (-63, 63), 0),
    "u8 x u8 (zp 128)": (np.uint8, np.uint8, (1, 255), 128),
    "s8 x s8 [-127,127]": (np.int8, np.int8, (-127, 127), 0),
}
SHAPES = {  # name: (cin, cout, kernel, hw, groups); kernel 0 = fully connected
    "conv 1x1 96->24 @112": (96, 24, 1, 112, 1),
    "conv 3x3 64->64 @56": (64, 64, 3, 56, 1),
    "depthwise 3x3 144 @56": (144, 144, 3, 56, 144),
    "fc 1280->1000": (1280, 1000, 0, 1, 1),
}
ONNX_TYPE = {np.uint8: TensorProto.UINT8, np.int8: TensorProto.INT8}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def _latency_ms(session: ort.InferenceSession, feeds: dict, repeats: int) -> float:
    for _ in range(5):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.thread_time()
        session.run(None, feeds)
        times.append(time.thread_time() - start)
    return float(np.median(times) * 1e3)


def _layer_model(x_type, w: np.ndarray, w_zp: int, shape, y_scale: float) -> onnx.ModelProto:
    cin, cout, kernel, hw, groups = shape
    c = [numpy_helper.from_array(np.float32(1), "one"),
         numpy_helper.from_array(np.array(0, x_type), "xz"),
         numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(w_zp, w.dtype), "wz"),
         numpy_helper.from_array(np.float32(y_scale), "ys")]
    if kernel == 0:
        node = helper.make_node("QGemm", ["x", "one", "xz", "w", "one", "wz", "", "ys", "xz"],
                                ["y"], domain="com.microsoft", transB=1)
    else:
        node = helper.make_node("QLinearConv", ["x", "one", "xz", "w", "one", "wz", "ys", "xz"],
                                ["y"], pads=[kernel // 2] * 4, group=groups)
    x_shape = (1, cin) if kernel == 0 else (1, cin, hw, hw)
    graph = helper.make_graph([node], "layer",
                              [helper.make_tensor_value_info("x", ONNX_TYPE[x_type], x_shape)],
                              [helper.make_tensor_value_info("y", ONNX_TYPE[x_type], None)], c)
    return helper.make_model(graph, ir_version=10, opset_imports=[
        helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])


def saturation_table(repeats: int) -> list[dict]:
    rows = []
    for shape_name, shape in SHAPES.items():
        cin, cout, kernel, hw, groups = shape
        for case, (x_type, w_type, (lo, hi), w_zp) in WEIGHT_CASES.items():
            rng = np.random.default_rng(0)
            info = np.iinfo(x_type)
            x_shape = (1, cin) if kernel == 0 else (1, cin, hw, hw)
            x = rng.integers(info.min, info.max + 1, x_shape).astype(x_type)
            w_shape = (cout, cin) if kernel == 0 else (cout, cin // groups, kernel, kernel)
            w = rng.integers(lo, hi + 1, w_shape).astype(w_type)
            wc = w.astype(np.float64) - w_zp
            if kernel == 0:
                acc = x.astype(np.float64) @ wc.T
            else:
                acc = torch.nn.functional.conv2d(torch.from_numpy(x.astype(np.float64)),
                                                 torch.from_numpy(wc), padding=kernel // 2,
                                                 groups=groups).numpy()
            y_scale = float(np.float32(acc.std() / 40))
            session = _session(_layer_model(x_type, w, w_zp, shape, y_scale))
            got = session.run(None, {"x": x})[0].astype(np.int64)
            exact = np.clip(np.rint(acc.astype(np.float32) * (np.float32(1) / np.float32(
                y_scale))), info.min, info.max)
            err = np.abs(got - exact)
            rows.append({"shape": shape_name, "types": case,
                         "wrong_fraction": float(np.mean(err > 0)), "max_error_lsb": int(err.max()),
                         "ms": _latency_ms(session, {"x": x}, repeats)})
            print(f"{shape_name:24s} {case:24s} wrong {rows[-1]['wrong_fraction']:7.2%} "
                  f"max {rows[-1]['max_error_lsb']} {rows[-1]['ms']:.3f} ms", flush=True)
    return rows


class _QdqWriter:
    """QDQ (or plain float32, float_only=True) ONNX encoding of the ops mobilenet_v2_like uses."""

    def __init__(self, program: IntProgram, float_only: bool):
        self.p, self.float_only = program, float_only
        self.nodes, self.inits = [], []
        self.done: set[str] = set()
        self.shapes = infer_shapes(program)

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op_type, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op_type, inputs, [output], **attrs))
        return output

    def real(self, name: str) -> str:
        """The float value of integer tensor `name` (a DequantizeLinear in QDQ)."""
        if self.float_only or f"{name}/real" in self.done:
            return name if self.float_only else f"{name}/real"
        self.done.add(f"{name}/real")
        t = self.p.tensors[name]
        return self.node("DequantizeLinear", [name, self.const(f"{name}/s", np.float32(t.scale)),
                                              self.const(f"{name}/z", np.uint8(t.zero_point))],
                         f"{name}/real")

    def output(self, real: str, name: str) -> None:
        if self.float_only:
            self.node("Identity", [real], name)
            return
        t = self.p.tensors[name]
        self.node("QuantizeLinear", [real, self.const(f"{name}/qs", np.float32(t.scale)),
                                     self.const(f"{name}/qz", np.uint8(t.zero_point))], name)

    def weights(self, op) -> tuple[str, str]:
        y = op.output
        sx = np.float32(self.p.tensors[op.inputs[0]].scale)
        scale = np.broadcast_to(op.weight_scale, (op.weight.shape[0],)).astype(np.float32)
        if self.float_only:
            w = (op.weight.astype(np.float32) - op.weight_zero_point) * scale.reshape(
                (-1,) + (1,) * (op.weight.ndim - 1))
            return self.const(f"{y}/w", w), self.const(f"{y}/b", (op.bias * (sx * scale)).astype(
                np.float32))
        w = self.node("DequantizeLinear", [
            self.const(f"{y}/wq", op.weight.astype(np.int8)), self.const(f"{y}/ws", scale),
            self.const(f"{y}/wz", np.zeros(len(scale), np.int8))], f"{y}/w", axis=0)
        b = self.node("DequantizeLinear", [
            self.const(f"{y}/bq", op.bias), self.const(f"{y}/bs", sx * scale),
            self.const(f"{y}/bz", np.zeros(len(scale), np.int32))], f"{y}/b", axis=0)
        return w, b

    def emit(self, op) -> None:
        y = op.output
        if isinstance(op, Quantize):
            if self.float_only:
                self.node("Identity", [op.inputs[0]], y)
            else:
                t = self.p.tensors[y]
                self.node("QuantizeLinear", [op.inputs[0], self.const(f"{y}/s", np.float32(
                    t.scale)), self.const(f"{y}/z", np.uint8(t.zero_point))], y)
        elif isinstance(op, Dequantize):
            self.node("Identity", [self.real(op.inputs[0])], y)
        elif isinstance(op, QConv2d):
            w, b = self.weights(op)
            relu = self.p.tensors[y].zero_point == self.p.tensors[y].qmin
            conv = self.node("Conv", [self.real(op.inputs[0]), w, b], f"{y}/conv",
                             kernel_shape=list(op.weight.shape[2:]), strides=list(op.stride),
                             pads=list(op.padding), group=op.groups)
            self.output(self.node("Relu", [conv], f"{y}/relu") if relu and self.float_only
                        else conv, y)
        elif isinstance(op, QLinear):
            w, b = self.weights(op)
            self.output(self.node("Gemm", [self.real(op.inputs[0]), w, b], f"{y}/gemm",
                                  transB=1), y)
        elif isinstance(op, QAdd):
            self.output(self.node("Add", [self.real(n) for n in op.inputs], f"{y}/add"), y)
        elif isinstance(op, QGlobalAvgPool):
            self.output(self.node("GlobalAveragePool", [self.real(op.inputs[0])], f"{y}/gap"), y)
        elif isinstance(op, Flatten):
            self.node("Flatten", [op.inputs[0]], y, axis=1)
        else:
            raise ValueError(f"no QDQ encoding for {type(op).__name__}")

    def model(self) -> onnx.ModelProto:
        for op in self.p.ops:
            self.emit(op)
        graph = helper.make_graph(
            self.nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                              self.shapes["x"])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], self.inits)
        return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 21)])


def _round_robin_ms(sessions: list, feeds: dict, repeats: int) -> list[float]:
    """Median latency of each session, timing them in turns so that machine noise is shared."""
    for session in sessions:
        for _ in range(5):
            session.run(None, feeds)
    times = [[] for _ in sessions]
    for _ in range(repeats):
        for i, session in enumerate(sessions):
            start = time.thread_time()
            session.run(None, feeds)
            times[i].append(time.thread_time() - start)
    return [float(np.median(t) * 1e3) for t in times]


def encoding_table(repeats: int) -> list[dict]:
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    programs = {8: mobilenet_v2_like(0), 7: mobilenet_v2_like(0, weight_bits=7)}
    refs = {bits: run_reference(p, x)["y"] for bits, p in programs.items()}
    cases = [
        ("QOperator, weight_type=auto (u8 weights)", 8, lambda p: export_onnx(p)),
        ("QOperator, weight_type=s8", 8, lambda p: export_onnx(p, weight_type="s8")),
        ("QOperator, 7-bit weights (auto: s8)", 7, lambda p: export_onnx(p)),
        ("QDQ, s8 weights (ORT fuses)", 8, lambda p: _QdqWriter(p, False).model()),
        ("QDQ, 7-bit s8 weights (ORT fuses)", 7, lambda p: _QdqWriter(p, False).model()),
        ("float32 (same net, dequantized weights)", 8, lambda p: _QdqWriter(p, True).model()),
    ]
    sessions = [_session(build(programs[bits])) for _, bits, build in cases]
    latencies = _round_robin_ms(sessions, {"x": x}, repeats)
    float_ms = latencies[-1]
    rows = []
    for (name, bits, _), session, ms in zip(cases, sessions, latencies, strict=True):
        integer = not name.startswith("float32")
        y = session.run(None, {"x": x})[0]
        rows.append({
            "encoding": name, "weight_bits": bits, "ms": ms, "speedup_vs_float": float_ms / ms,
            "outputs_equal_reference": float(np.mean(y == refs[bits])) if integer else None,
        })
        print(f"{name:42s} {ms:8.2f} ms  x{float_ms / ms:.2f}  equal "
              f"{rows[-1]['outputs_equal_reference']}", flush=True)
    return rows


STEM_SHAPES = {  # name: (cin, cout, kernel, stride, hw, mid-network)
    "stem 3->32 3x3 s2 @224 (EfficientNet-Lite0)": (3, 32, 3, 2, 224, False),
    "stem 3->64 7x7 s2 @224 (ResNet)": (3, 64, 7, 2, 224, False),
    "stem 1->32 3x3 s1 @28 (Fashion-MNIST)": (1, 32, 3, 1, 28, False),
    "conv 6->32 1x1 @56": (6, 32, 1, 1, 56, False),
    "stem 1->8 3x3 s1 @28 (< 16 outputs: no ConvSym)": (1, 8, 3, 1, 28, False),
    "mid-network 3->32 3x3 s2 @112 after a 1x1 conv": (3, 32, 3, 2, 112, True),
}


def _stem_model(shape, padded: bool) -> onnx.ModelProto:
    """float x -> QuantizeLinear [-> 1x1 QLinearConv] [-> Pad to a multiple of 4 channels]
    -> QLinearConv; `padded` adds the Pad and zero weights for the added channels."""
    cin, cout, kernel, stride, _, mid = shape
    rng = np.random.default_rng(cin * 1000 + cout)
    added = -cin % 4 if padded else 0
    w = rng.integers(-127, 128, (cout, cin, kernel, kernel)).astype(np.int8)
    consts = {"xs": np.float32(0.02), "xz": np.uint8(120), "ys": np.float32(0.05),
              "yz": np.uint8(3), "ws": rng.uniform(1e-3, 2e-3, cout).astype(np.float32),
              "wz": np.zeros(cout, np.int8), "b": rng.integers(-999, 999, cout).astype(np.int32),
              "w": np.pad(w, ((0, 0), (0, added), (0, 0), (0, 0))),
              "mw": rng.integers(-127, 128, (cin, cin, 1, 1)).astype(np.int8),
              "mws": np.full(cin, 2e-3, np.float32), "mwz": np.zeros(cin, np.int8),
              "pads": np.array([0, 0, 0, 0, 0, added, 0, 0], np.int64)}
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q"])]
    if mid:
        nodes.append(helper.make_node("QLinearConv", ["q", "xs", "xz", "mw", "mws", "mwz", "xs",
                                                      "xz"], ["m"]))
    src = "m" if mid else "q"
    if added:
        nodes.append(helper.make_node("Pad", [src, "pads", "xz"], ["p"], mode="constant"))
        src = "p"
    nodes.append(helper.make_node(
        "QLinearConv", [src, "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
        kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[kernel // 2] * 4))
    graph = helper.make_graph(
        nodes, "stem", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                      (1, cin, shape[4], shape[4]))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None)],
        [numpy_helper.from_array(v, k) for k, v in consts.items()
         if (added or k != "pads") and (mid or not k.startswith("mw"))])
    return helper.make_model(graph, ir_version=10, opset_imports=[helper.make_opsetid("", 21)])


def stem_pad_table(repeats: int) -> list[dict]:
    rows = []
    for name, shape in STEM_SHAPES.items():
        x = {"x": np.random.default_rng(1).random((1, shape[0], shape[4], shape[4]),
                                                  np.float32)}
        sessions = [_session(_stem_model(shape, padded)) for padded in (False, True)]
        plain, padded = _round_robin_ms(sessions, x, repeats * 5)
        equal = bool(np.array_equal(*(s.run(None, x)[0] for s in sessions)))
        rows.append({"layer": name, "input_channels": shape[0],
                     "padded_channels": shape[0] - shape[0] % -4, "ms": plain,
                     "padded_ms": padded, "ratio": padded / plain, "identical": equal})
        print(f"{name:48s} {plain:.3f} ms -> {padded:.3f} ms ({padded / plain:.2f}x) "
              f"identical {equal}", flush=True)
    return rows


def _markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# ONNX Runtime kernels: exactness and speed of integer types and encodings", "",
        f"onnxruntime {m['onnxruntime']}, {m['cpu']}, VNNI: {m['vnni']}, 1 thread, batch 1, "
        f"median of {result['repeats']} runs, CPU time of the calling thread (ORT computes "
        "there with 1 intra-op thread; waits for a core excluded). Produced by "
        "`benchmarks/onnx_kernels.py`.", "",
        "## Saturation: one layer, random full-range inputs, vs exact integer math", "",
        "| layer | activations x weights | wrong outputs | max error (LSB) | time (ms) |",
        "|---|---|---|---|---|"]
    lines += [f"| {r['shape']} | {r['types']} | {r['wrong_fraction']:.2%} | "
              f"{r['max_error_lsb']} | {r['ms']:.3f} |" for r in result["saturation"]]
    if m["vnni"]:
        lines += ["", "This CPU has VNNI, so u8 x s8 sums are exact (vpdpbusd). On AVX2-only "
                  "CPUs DESIGN.md measured 19% wrong outputs (max 2 LSB) for full-range "
                  "u8 x s8; tests/export/test_onnx_types.py pins both behaviours."]
    lines += ["", "## Encodings: MobileNet-v2 224x224 IntProgram (random weights)", "",
              "Sessions timed in turns (round robin) so that machine noise hits all alike.", "",
              "| encoding | weight bits | latency (ms) | speedup vs float32 | "
              "outputs equal to reference |", "|---|---|---|---|---|"]
    for r in result["encodings"]:
        equal = "-" if r["outputs_equal_reference"] is None else (
            f"{r['outputs_equal_reference']:.2%}")
        lines.append(f"| {r['encoding']} | {r['weight_bits']} | {r['ms']:.2f} | "
                     f"{r['speedup_vs_float']:.2f}x | {equal} |")
    lines += ["", "## Channel padding to a multiple of 4 (MLAS ConvSym needs it)", "",
              "QuantizeLinear -> QLinearConv with int8 per-channel weights (zero point 0), "
              "against the same with a Pad of the quantized input (zero point) and zero "
              "weights for the added channels; timed in turns. `export_onnx` pads a stem "
              "conv (input = Quantize of a graph input, >= 16 output channels, a multiple of "
              "8), not a mid-network one.", "",
              "| layer | input channels | padded to | time (ms) | padded (ms) | ratio | "
              "identical outputs |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['layer']} | {r['input_channels']} | {r['padded_channels']} | "
              f"{r['ms']:.3f} | {r['padded_ms']:.3f} | {r['ratio']:.2f}x | {r['identical']} |"
              for r in result["stem_pad"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    result = {
        "machine": {"cpu": cpu, "vnni": cpu_has_vnni(), "onnxruntime": ort.__version__,
                    "threads": 1},
        "repeats": args.repeats,
        "saturation": saturation_table(args.repeats),
        "encodings": encoding_table(args.repeats),
        "stem_pad": stem_pad_table(args.repeats),
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_bytes(RESULTS / "onnx_kernels.json", json.dumps(result, indent=2).encode())
    atomic_write_bytes(RESULTS / "onnx_kernels.md", _markdown(result).encode())


if __name__ == "__main__":
    main()
