"""EfficientNet-Lite0 in LiteRT: intq's .tflite (XNNPACK) vs ONNX Runtime float32 and intq's
int8 ONNX, side by side; fidelity on held-out photographs; XNNPACK vs LiteRT's reference
kernels, layer by layer.

Models, all from ``intq.zoo.load_model("efficientnet-lite0")`` (published weights):
- float32: ONNX export of the float model (``peers.export_float_onnx``), in ONNX Runtime;
- intq int8 ONNX: ``intq.ptq.quantize`` with the default recipe (what ``intq quantize``
  uses: W8 symmetric per channel, A8 asymmetric per tensor, MSE ranges, bias correction) on
  ``--calib`` natural-image calibration crops, ``export_onnx`` (weight_type s8 on a VNNI CPU,
  else auto), in ONNX Runtime;
- intq int8 .tflite: ``export_tflite`` of the same IntProgram, in LiteRT 2.3 with XNNPACK
  (its default) and with its reference kernels (``OpResolverType.BUILTIN_REF``);
- optionally (``--peer-tflite``) the int8 .tflite that the PyTorch-to-LiteRT converter makes
  (litert-torch's PT2E symmetric per-channel quantizer, converted in a separate environment by
  ``benchmarks/litert_torch_peer.py``), in LiteRT with XNNPACK.

Latency: ``intq.eval.latency.model_latency``: 1 thread, batch 1, ``--warmup`` untimed rounds,
then ``--repeats`` rounds that run every model once in rotating order; medians, and ratios of
medians to ORT float32 from this one run. A LiteRT call is set input + invoke + read output
(the NHWC input prepared once), an ORT call ``session.run``.
Fidelity: logits of each int8 model on the first ``--eval`` evaluation crops against the
float32 ONNX model: top-1 agreement and logit SQNR (``intq.eval.compare_logits``).
Exactness: the reference interpreter (fixed point) against LiteRT BUILTIN_REF on every integer
tensor of the first ``--exact-images`` crops. XNNPACK vs BUILTIN_REF: a second .tflite with
every integer tensor also a model output (``intermediates=True``, so that XNNPACK hands each
one out) on the first ``--layer-images`` crops: differing values, their fraction, max LSB.

    .venv/bin/python benchmarks/litert_efficientnet.py [--repeats 300] [--calib 256] [--eval 512]
Writes benchmarks/results/litert_efficientnet.{json,md}.
"""

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from peers import export_float_onnx, ort_logits  # noqa: E402

from intq.convert.from_graph import convert_to_program  # noqa: E402
from intq.convert.program import (  # noqa: E402
    Dequantize,
    Input,
    IntProgram,
    QAdd,
    QAvgPool2d,
    QConv2d,
    QGlobalAvgPool,
    QLinear,
    Quantize,
)
from intq.convert.shapes import infer_shapes  # noqa: E402
from intq.eval import compare_logits  # noqa: E402
from intq.eval.latency import model_latency  # noqa: E402
from intq.export.onnx import export_onnx  # noqa: E402
from intq.export.tflite import export_tflite  # noqa: E402
from intq.ptq import quantize  # noqa: E402
from intq.runtime import run_reference  # noqa: E402
from intq.runtime.litert import LiteRtSession  # noqa: E402
from intq.runtime.onnxruntime import cpu_has_vnni  # noqa: E402
from intq.runtime.requantize import dequantize  # noqa: E402
from intq.zoo import MODEL_ZOO, load_model  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SHAPE = (3, 224, 224)
NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization
TIMED = {"ORT float32": "float.onnx", "intq int8 ONNX in ORT": "intq.onnx",
         "intq int8 .tflite in LiteRT/XNNPACK": "intq.tflite"}
TARGET_RATIO = 0.50
PEER = "litert-torch PT2E int8 .tflite, LiteRT XNNPACK"
REQUANTIZING = (QConv2d, QAdd, QAvgPool2d, QGlobalAvgPool, QLinear)  # QLinear: integer output


def build(out: Path, n_calib: int):
    """Write the models into ``out``; return the IntProgram and build seconds."""
    model = load_model("efficientnet-lite0")
    calib = load_natural_images("calibration", n_calib, NORMALIZATION).x
    export_float_onnx(model, SHAPE, out / "float.onnx")
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = convert_to_program(quantize(model, calib, progress=False), SHAPE)
    seconds = {"quantize + convert": time.perf_counter() - start}
    export_onnx(program, out / "intq.onnx", weight_type="s8" if cpu_has_vnni() else "auto")
    start = time.perf_counter()
    export_tflite(program, out / "intq.tflite")
    seconds["export_tflite"] = time.perf_counter() - start
    export_tflite(program, out / "intq_all.tflite", intermediates=True)
    return program, seconds


def litert_logits(path: Path, x: torch.Tensor, ref_kernels: bool) -> torch.Tensor:
    session = LiteRtSession(path, threads=1, ref_kernels=ref_kernels)
    return torch.from_numpy(np.concatenate([session.run(x[i:i + 1].numpy())
                                            for i in range(len(x))]))


def fidelity(out: Path, x: torch.Tensor) -> dict:
    peer = {PEER: litert_logits(out / "peer.tflite", x, False)} if (
        out / "peer.tflite").exists() else {}
    logits = {"ORT float32": ort_logits(out / "float.onnx", x), **peer,
              "intq int8 ONNX in ORT": ort_logits(out / "intq.onnx", x),
              "intq .tflite, LiteRT XNNPACK": litert_logits(out / "intq.tflite", x, False),
              "intq .tflite, LiteRT BUILTIN_REF": litert_logits(out / "intq.tflite", x, True)}
    ref = logits.pop("ORT float32")
    rows = {k: {"top1_agreement": c.top1_agreement, "sqnr_db": c.sqnr_db}
            for k, c in ((k, compare_logits(ref, v)) for k, v in logits.items())}
    xnn, builtin = (logits[k].numpy() for k in ("intq .tflite, LiteRT XNNPACK",
                                                "intq .tflite, LiteRT BUILTIN_REF"))
    rows["XNNPACK vs BUILTIN_REF logits"] = {
        "top1_agreement": float((xnn.argmax(1) == builtin.argmax(1)).mean()),
        "max_abs_diff": float(np.abs(xnn - builtin).max()),
        "logit_std": float(builtin.std())}
    return rows


def exactness(out: Path, program, x: np.ndarray) -> dict:
    """Reference interpreter (fixed point) vs BUILTIN_REF, every tensor, image by image."""
    session = LiteRtSession(out / "intq.tflite", ref_kernels=True, preserve_all=True)
    names = [*program.tensors, *program.outputs]
    values = differing = 0
    for i in range(len(x)):
        got = session.run_all(x[i:i + 1])
        ref = run_reference(program, x[i:i + 1], mode="fixed_point", return_all=True)
        values += sum(ref[n].size for n in names)
        differing += sum(int((got[n] != ref[n]).sum()) for n in names)
    return {"images": len(x), "tensors": len(names), "values": values, "differing": differing}


def xnnpack_layers(out: Path, program, x: np.ndarray) -> dict:
    """XNNPACK vs BUILTIN_REF on every integer tensor (the intermediates model)."""
    xnn = LiteRtSession(out / "intq_all.tflite", threads=1)
    ref = LiteRtSession(out / "intq_all.tflite", ref_kernels=True)
    per_tensor = {n: [0, 0, 0] for n in program.tensors}  # values, differing, max LSB
    for i in range(len(x)):
        a, b = xnn.run_outputs(x[i:i + 1]), ref.run_outputs(x[i:i + 1])
        for n, row in per_tensor.items():
            d = np.abs(a[n].astype(np.int64) - b[n].astype(np.int64))
            row[0] += d.size
            row[1] += int((d > 0).sum())
            row[2] = max(row[2], int(d.max()))
    values, differing = (sum(r[k] for r in per_tensor.values()) for k in (0, 1))
    worst = sorted(per_tensor.items(), key=lambda kv: -kv[1][1] / kv[1][0])[:5]
    return {"images": len(x), "tensors": len(per_tensor), "values": values,
            "differing": differing, "fraction": differing / values,
            "max_lsb": max(r[2] for r in per_tensor.values()),
            "tensors_with_differences": sum(r[1] > 0 for r in per_tensor.values()),
            "worst": [{"tensor": n, "op": type(program.producer(n)).__name__,
                       "fraction": r[1] / r[0], "max_lsb": r[2]} for n, r in worst]}


def single_op_program(program: IntProgram, op) -> IntProgram:
    """``op`` alone: float inputs quantized onto its input grids (a dequantized integer
    tensor quantizes back to itself exactly), its output dequantized."""
    shapes = infer_shapes(program)
    names = list(dict.fromkeys(op.inputs))
    inputs = tuple(Input(f"{n}/float", (None, *shapes[n][1:])) for n in names)
    ops = [Quantize(f"{n}/float", n) for n in names] + [op, Dequantize(op.output, "out")]
    tensors = {n: program.tensors[n] for n in (*names, op.output)}
    return IntProgram(inputs, ("out",), tensors, tuple(ops))


def xnnpack_op_by_op(program: IntProgram, x: np.ndarray) -> dict:
    """Each requantizing op alone, on the reference's integer inputs: XNNPACK vs BUILTIN_REF
    on its output (no difference carried in from earlier layers)."""
    ref = run_reference(program, x, mode="fixed_point", return_all=True)
    by_kind: dict[str, list[int]] = {}
    for op in program.ops:
        if not isinstance(op, REQUANTIZING) or getattr(op, "requant", 0) is None:
            continue
        single = single_op_program(program, op)
        data = export_tflite(single, intermediates=True)
        feeds = {f"{n}/float": dequantize(ref[n], program.tensors[n])
                 for n in dict.fromkeys(op.inputs)}
        outs = [LiteRtSession(data, ref_kernels=k).run_outputs(feeds)[op.output]
                for k in (False, True)]
        d = np.abs(outs[0].astype(np.int64) - outs[1].astype(np.int64))
        np.testing.assert_array_equal(outs[1], ref[op.output])  # BUILTIN_REF == reference
        kind = type(op).__name__ + (" depthwise" if getattr(op, "groups", 1) > 1 else "")
        row = by_kind.setdefault(kind, [0, 0, 0, 0])
        row[0] += 1
        row[1] += d.size
        row[2] += int((d > 0).sum())
        row[3] = max(row[3], int(d.max()))
    return {k: {"ops": r[0], "values": r[1], "differing": r[2], "fraction": r[2] / r[1],
                "max_lsb": r[3]} for k, r in by_kind.items()}


def latency(out: Path, repeats: int, warmup: int) -> list[dict]:
    timed = dict(TIMED)
    if (out / "peer.tflite").exists():
        timed[PEER] = "peer.tflite"
    stats = model_latency([out / f for f in timed.values()], threads=1, repeats=repeats,
                          warmup=warmup, batch=1)
    flt = stats[0]
    return [{"model": label, **s.as_dict(), "ratio_vs_ort_float32": s.median_ms / flt.median_ms}
            for label, s in zip(timed, stats, strict=True)]


def markdown(r: dict) -> str:
    lines = [f"EfficientNet-Lite0, {r['setup']}", "",
             "| model | median ms | p10 ms | p90 ms | ratio to ORT float32 |",
             "|---|---|---|---|---|"]
    lines += [f"| {row['model']} | {row['median_ms']:.2f} | {row['p10_ms']:.2f} | "
              f"{row['p90_ms']:.2f} | {row['ratio_vs_ort_float32']:.2f}x |"
              for row in r["latency"]]
    lines += ["", f"Fidelity on {r['eval_images']} held-out photographs (vs ORT float32):", "",
              "| model | top-1 agreement | logit SQNR dB |", "|---|---|---|"]
    lines += [f"| {k} | {v['top1_agreement']:.3f} | {v['sqnr_db']:.1f} |"
              for k, v in r["fidelity"].items() if "sqnr_db" in v]
    x = r["fidelity"]["XNNPACK vs BUILTIN_REF logits"]
    e, lay = r["exactness"], r["xnnpack_layers"]
    lines += ["", f"XNNPACK vs BUILTIN_REF logits: top-1 agreement {x['top1_agreement']:.3f}, "
              f"max |diff| {x['max_abs_diff']:.3f} (logit std {x['logit_std']:.2f}).",
              f"Reference interpreter (fixed point) vs BUILTIN_REF: {e['differing']} of "
              f"{e['values']} values differ ({e['tensors']} tensors, {e['images']} images).",
              f"XNNPACK vs BUILTIN_REF, every integer tensor ({lay['images']} images): "
              f"{lay['differing']} of {lay['values']} values differ ({lay['fraction']:.2e}), "
              f"max {lay['max_lsb']} LSB, in {lay['tensors_with_differences']} of "
              f"{lay['tensors']} tensors.", "", "| worst tensors | op | fraction | max LSB |",
              "|---|---|---|---|"]
    lines += [f"| {w['tensor']} | {w['op']} | {w['fraction']:.2e} | {w['max_lsb']} |"
              for w in lay["worst"]]
    lines += ["", "XNNPACK vs BUILTIN_REF op by op (each op alone on the reference's integer "
              "inputs):", "", "| op | ops | values | differing | fraction | max LSB |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {k} | {v['ops']} | {v['values']} | {v['differing']} | {v['fraction']:.2e} | "
              f"{v['max_lsb']} |" for k, v in r["xnnpack_op_by_op"].items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calib", type=int, default=256)
    p.add_argument("--eval", type=int, default=512)
    p.add_argument("--exact-images", type=int, default=4)
    p.add_argument("--layer-images", type=int, default=8)
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--peer-tflite", type=Path, help="the PyTorch-to-LiteRT converter's model")
    args = p.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="intq-litert-") as tmp:
        out = Path(tmp)
        program, seconds = build(out, args.calib)
        if args.peer_tflite is not None:
            shutil.copy(args.peer_tflite, out / "peer.tflite")
        x = load_natural_images("evaluation", args.eval, NORMALIZATION).x
        sizes = {f.name: f.stat().st_size for f in out.glob("*") if f.name != "intq_all.tflite"}
        result = {
            "setup": f"1 thread, batch 1, {args.repeats} interleaved rounds after "
                     f"{args.warmup} warm-up rounds, on {platform.processor() or 'x86-64'} "
                     f"(VNNI: {cpu_has_vnni()})",
            "latency": latency(out, args.repeats, args.warmup),
            "target_ratio": TARGET_RATIO, "sizes_bytes": sizes, "build_seconds": seconds,
            "eval_images": len(x), "calib_images": args.calib,
            "fidelity": fidelity(out, x),
            "exactness": exactness(out, program, x[:args.exact_images].numpy()),
            "xnnpack_layers": xnnpack_layers(out, program, x[:args.layer_images].numpy()),
            "xnnpack_op_by_op": xnnpack_op_by_op(program, x[:args.layer_images].numpy()),
            "peer": None if args.peer_tflite is None else PEER,
        }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "litert_efficientnet.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "litert_efficientnet.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
