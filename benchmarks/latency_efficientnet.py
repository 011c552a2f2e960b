"""Latency and file size of EfficientNet-Lite0: float ONNX vs intq int8 vs ORT's own int8.

Models, all from ``intq.zoo.load_model("efficientnet-lite0")`` with its published weights:
- float: ONNX export of the float model (``peers.export_float_onnx``, opset 17);
- intq int8: ``intq.ptq.quantize`` (recipe sym-per-channel-8: W8 symmetric per channel,
  A8 asymmetric per tensor, percentile ranges, bias correction) on the first ``--calib``
  natural-image calibration crops, converted to an IntProgram and exported as QOperator ONNX
  with ``weight_type="s8"`` (exact here: this CPU has AVX512-VNNI) and ``"auto"`` (s8 only
  when all weights fit 7 bits, else u8 = w + 128: exact on any x86-64);
- ORT int8: ``onnxruntime.quantization.quantize_static`` of the float ONNX (MinMax, QDQ,
  per channel, u8 activations, s8 weights) on the same crops;
- intq 4-bit weights (sym-per-channel-4, A8) for the file size: the ONNX QLinearConv/QGemm
  weights are 8-bit tensors, so the ONNX file stores each 4-bit weight in one byte; the
  IntProgram file (``intq.convert.save_program``) packs two 4-bit weights per byte.

Latency: ``intq.eval.latency.ort_latency``: one CPU session per model, 1 intra-op thread,
batch 1, ``--warmup`` untimed rounds, then ``--repeats`` rounds that run every model once in
rotating order (so machine load hits all alike); median and 10th/90th percentiles. Ratios
are of medians from this one run. The same rotation then measures each run's CPU time on the
calling thread (``time.thread_time``; with 1 intra-op thread ONNX Runtime computes on the
caller), which waits for a core do not inflate. The ONNX Runtime profile
(``enable_profiling``) of the int8 models sums each node's kernel time by op type over
``--profile-runs`` runs, and pairs the nodes of intq and ORT (k-th node of an op type with the
k-th) to list, by median kernel time per run, every node that differs by more than
``NODE_DIFF_US`` or exists in one model only.
Sanity: logits of every model on the first ``--check`` evaluation crops vs float (top-1
agreement, SQNR), and intq s8 == intq auto element for element.

    .venv/bin/python benchmarks/latency_efficientnet.py [--repeats 500] [--calib 64]
Writes benchmarks/results/latency_efficientnet.{json,md}.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).parent))
from peers import export_float_onnx, ort_logits, ort_quantize_static  # noqa: E402

from intq.convert import save_program  # noqa: E402
from intq.convert.from_graph import convert_to_program  # noqa: E402
from intq.eval import compare_logits  # noqa: E402
from intq.eval.latency import onnx_feed, ort_latency, speedup  # noqa: E402
from intq.export.onnx import export_onnx  # noqa: E402
from intq.ptq import quantize  # noqa: E402
from intq.recipes import get_recipe  # noqa: E402
from intq.runtime.onnxruntime import cpu_has_vnni  # noqa: E402
from intq.zoo import load_model  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402
from intq.zoo.registry import MODEL_ZOO  # noqa: E402

LITE0_NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization

RESULTS = Path(__file__).parent / "results"
SHAPE = (3, 224, 224)
INT8_TARGET, INT4_TARGET = 0.26, 0.15
TIMED = {  # latency row -> model file
    "float32": "float.onnx",
    "intq int8 (weight_type=s8)": "intq_w8_s8.onnx",
    "intq int8 (weight_type=auto)": "intq_w8_auto.onnx",
    "ORT quantize_static int8 (MinMax, QDQ)": "ort_minmax_qdq.onnx",
}
PROFILED = {"intq int8 (weight_type=s8)": "intq_w8_s8.onnx",
            "ORT quantize_static int8 (MinMax, QDQ)": "ort_minmax_qdq.onnx"}
NODE_DIFF_US = 5.0


def build_models(out: Path, n_calib: int) -> dict:
    """Write every model file into ``out``; returns the wall times of the build steps."""
    model = load_model("efficientnet-lite0")
    calib = load_natural_images("calibration", n_calib, LITE0_NORMALIZATION).x
    seconds = {}
    export_float_onnx(model, SHAPE, out / "float.onnx")
    for name, recipe in (("w8", "sym-per-channel-8"), ("w4", "sym-per-channel-4")):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # widened dead-channel scales: counted elsewhere
            qgm = quantize(model, calib, get_recipe(recipe), progress=False)
        program = convert_to_program(qgm, SHAPE)
        seconds[f"intq {recipe} quantize + convert"] = time.perf_counter() - start
        save_program(program, out / f"intq_{name}.intq")
        export_onnx(program, out / f"intq_{name}_auto.onnx", weight_type="auto")
        if name == "w8":
            export_onnx(program, out / "intq_w8_s8.onnx", weight_type="s8")
    seconds["ORT quantize_static MinMax"] = ort_quantize_static(
        out / "float.onnx", calib, "MinMax", out / "ort_minmax_qdq.onnx")
    return seconds


def sizes(out: Path, params: int) -> list[dict]:
    float_bytes = (out / "float.onnx").stat().st_size
    rows = [
        ("float32 ONNX", "float.onnx", "32-bit floats", None),
        ("intq int8 ONNX (weight_type=s8)", "intq_w8_s8.onnx", "1 byte / weight", INT8_TARGET),
        ("intq int8 ONNX (weight_type=auto)", "intq_w8_auto.onnx", "1 byte / weight",
         INT8_TARGET),
        ("intq int8 IntProgram (.intq)", "intq_w8.intq", "1 byte / weight", INT8_TARGET),
        ("ORT quantize_static int8 ONNX (QDQ)", "ort_minmax_qdq.onnx", "1 byte / weight",
         INT8_TARGET),
        ("intq 4-bit-weight ONNX (weight_type=auto)", "intq_w4_auto.onnx",
         "1 byte / weight (ONNX QLinearConv takes 8-bit weights)", INT4_TARGET),
        ("intq 4-bit-weight IntProgram (.intq)", "intq_w4.intq", "packed, 2 weights / byte",
         INT4_TARGET),
    ]
    out_rows = []
    for label, file, storage, target in rows:
        size = (out / file).stat().st_size
        if file.endswith(".onnx"):
            storage = f"{storage}; weight tensors: {onnx_weight_types(out / file)}"
        ratio = size / float_bytes
        out_rows.append({
            "file": label, "bytes": size, "ratio_vs_float_onnx": ratio, "weights": storage,
            "target_ratio": target,
            "meets_target": None if target is None else bool(ratio <= target),
        })
    out_rows.append({"file": "(float32 parameters alone: 4 bytes x parameter count)",
                     "bytes": 4 * params, "ratio_vs_float_onnx": 4 * params / float_bytes,
                     "weights": f"{params} parameters", "target_ratio": None,
                     "meets_target": None})
    return out_rows


def onnx_weight_types(path: Path) -> str:
    """Element types of the weight initializers of the integer conv/gemm nodes, with counts
    (QOperator: input 3 of QLinearConv/QGemm; QDQ: the 8-bit initializers DequantizeLinear
    nodes read; int32 biases are not counted)."""
    import onnx

    model = onnx.load(str(path))
    inits = {t.name: onnx.TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer}
    names = [n.input[3] for n in model.graph.node if n.op_type in ("QLinearConv", "QGemm")]
    names += [n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    kinds = [inits[name] for name in names if inits.get(name) in ("INT8", "UINT8", "INT4")]
    return ", ".join(f"{kinds.count(k)} {k.lower()}" for k in sorted(set(kinds))) or "float"


def program_breakdown(path: Path) -> dict[str, int]:
    """Bytes of an IntProgram file by array field (weight, bias, weight_scale, requant.*)
    plus the safetensors header (JSON program description and array index)."""
    from safetensors import safe_open

    fields: dict[str, int] = defaultdict(int)
    with safe_open(str(path), framework="numpy") as f:
        for key in f.keys():
            fields[key.split(".", 2)[2]] += f.get_tensor(key).nbytes
    fields["header (JSON program + index)"] = path.stat().st_size - sum(fields.values())
    return dict(fields)


def sanity(out: Path, n_check: int) -> dict:
    """Logits of every timed model on ``n_check`` evaluation crops vs the float ONNX model."""
    x = load_natural_images("evaluation", n_check, LITE0_NORMALIZATION).x
    logits = {label: ort_logits(out / file, x) for label, file in TIMED.items()}
    ref = logits["float32"]
    result = {label: {"top1_agreement": c.top1_agreement, "sqnr_db": c.sqnr_db}
              for label, c in ((k, compare_logits(ref, v)) for k, v in logits.items()
                               if k != "float32")}
    result["intq s8 == intq auto (every logit)"] = bool(torch.equal(
        logits["intq int8 (weight_type=s8)"], logits["intq int8 (weight_type=auto)"]))
    return result


def latency(out: Path, repeats: int, warmup: int) -> dict:
    load_before = _load_average()
    stats = ort_latency([out / f for f in TIMED.values()], threads=1, repeats=repeats,
                        warmup=warmup, batch=1)
    by = dict(zip(TIMED, stats, strict=True))
    flt, ort_q = by["float32"], by["ORT quantize_static int8 (MinMax, QDQ)"]
    rows = []
    for label, s in by.items():
        rows.append({"model": label, **s.as_dict(),
                     "speedup_vs_float": speedup(s, flt),
                     "latency_ratio_vs_float": s.median_ms / flt.median_ms,
                     "latency_ratio_vs_ort_int8": s.median_ms / ort_q.median_ms,
                     "p10_ratio_vs_ort_int8": s.p10_ms / ort_q.p10_ms})
    return {"rows": rows, "load_average": f"{load_before} before, {_load_average()} after",
            "thread_cpu": thread_cpu(out, repeats, warmup)}


def thread_cpu(out: Path, repeats: int, warmup: int) -> list[dict]:
    """Median CPU time of the calling thread per run, models in rotating turns. With one
    intra-op thread ONNX Runtime runs every kernel on the caller, so this is the run's compute
    time without the waits for a core that other processes cause (caches they share stay)."""
    sessions = {label: _session(out / file) for label, file in TIMED.items()}
    feeds = {label: onnx_feed(session, batch=1) for label, session in sessions.items()}
    labels = list(sessions)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for i in range(warmup + repeats):
        for label in labels[i % len(labels):] + labels[:i % len(labels)]:
            start = time.thread_time()
            sessions[label].run(None, feeds[label])
            if i >= warmup:
                times[label].append(time.thread_time() - start)
    medians = {label: 1e3 * statistics.median(t) for label, t in times.items()}
    ort_ms = medians["ORT quantize_static int8 (MinMax, QDQ)"]
    return [{"model": label, "median_cpu_ms": ms, "ratio_vs_float": ms / medians["float32"],
             "ratio_vs_ort_int8": ms / ort_ms} for label, ms in medians.items()]


def profiles(paths: dict[str, Path], runs: int, tmp: Path, warmup: int = 5) -> dict:
    """Kernel time per op type of each model (ORT profile "Node" events, ORT's fused op
    names), summed over ``runs`` runs after ``warmup`` discarded ones; the models take turns
    run by run, like the latency measurement."""
    sessions = {label: _session(path, tmp) for label, path in paths.items()}
    feeds = {label: onnx_feed(session, batch=1) for label, session in sessions.items()}
    for _ in range(warmup + runs):
        for label, session in sessions.items():
            session.run(None, feeds[label])
    return {label: _op_times(json.loads(Path(session.end_profiling()).read_text()), runs,
                             warmup) for label, session in sessions.items()}


def _session(path: Path, profile_dir: Path | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_dir / path.stem)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _op_times(trace: list[dict], runs: int, warmup: int) -> dict:
    starts = sorted(e["ts"] for e in trace if e.get("name") == "model_run")
    assert len(starts) == warmup + runs, f"{len(starts)} model_run events"
    total_us: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    node_us: dict[str, list[float]] = defaultdict(list)  # in execution order
    node_op: dict[str, str] = {}
    for event in trace:
        if (event.get("cat") == "Node" and event["name"].endswith("_kernel_time")
                and event["ts"] >= starts[warmup]):
            op = event["args"]["op_name"]
            total_us[op] += event["dur"]
            count[op] += 1
            node = event["name"].removesuffix("_kernel_time")
            node_us[node].append(event["dur"])
            node_op[node] = op
    node_total = sum(total_us.values())
    return {
        "runs": runs,
        "node_ms_per_run": node_total / runs / 1e3,
        "ops": [{"op_type": op, "nodes": count[op] // runs,
                 "ms_per_run": total_us[op] / runs / 1e3, "share": total_us[op] / node_total}
                for op in sorted(total_us, key=total_us.get, reverse=True)],
        "nodes": [{"node": node, "op_type": node_op[node],
                   "median_us": float(statistics.median(times))}
                  for node, times in node_us.items()],
    }


def node_differences(intq: dict, ort_q: dict) -> list[dict]:
    """Nodes of the two profiles paired by op type and rank among that type's nodes (the
    k-th QLinearConv of intq with the k-th of ORT); the pairs whose median kernel times
    differ by more than NODE_DIFF_US, and the nodes one model has and the other lacks."""
    def keyed(profile: dict) -> dict[tuple[str, int], dict]:
        seen: dict[str, int] = defaultdict(int)
        out = {}
        for n in profile["nodes"]:
            out[(n["op_type"], seen[n["op_type"]])] = n
            seen[n["op_type"]] += 1
        return out

    a, b = keyed(intq), keyed(ort_q)
    rows = []
    for key in list(a) + [k for k in b if k not in a]:
        x, y = a.get(key), b.get(key)
        if x and y and abs(x["median_us"] - y["median_us"]) <= NODE_DIFF_US:
            continue
        rows.append({"op_type": key[0], "rank": key[1],
                     "intq_node": x and x["node"], "intq_us": x and x["median_us"],
                     "ort_node": y and y["node"], "ort_us": y and y["median_us"]})
    return rows


def markdown(result: dict) -> str:
    env = result["environment"]
    lines = [
        "# EfficientNet-Lite0: latency and file size, float vs intq int8 vs ORT int8",
        "",
        f"onnxruntime {env['onnxruntime']}, {env['cpu']}, VNNI: {env['vnni']}, 1 intra-op "
        f"thread, batch 1, {result['repeats']} interleaved repeats after {result['warmup']} "
        f"warm-up rounds (machine shared: 1/5/15-min load average "
        f"{result['latency']['load_average']} the timing, on 2 cores). intq and ORT "
        f"calibrated on the same {result['calibration_crops']} natural-image crops. Produced "
        "by `benchmarks/latency_efficientnet.py`.",
        "",
        "## Latency",
        "",
        "| model | median ms | p10 ms | p90 ms | min ms | int8/float (median) "
        "| vs ORT int8 (median) | vs ORT int8 (p10) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["latency"]["rows"]:
        lines.append(f"| {r['model']} | {r['median_ms']:.2f} | {r['p10_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} | {r['min_ms']:.2f} | "
                     f"{r['latency_ratio_vs_float']:.2f}x | "
                     f"{r['latency_ratio_vs_ort_int8']:.3f}x | "
                     f"{r['p10_ratio_vs_ort_int8']:.3f}x |")
    lines += [
        "",
        "Ratios are median latency / median latency (lower is faster): `int8/float` = "
        "model / float32, `vs ORT int8` = model / ORT quantize_static int8. Other processes "
        "on the 2 cores add time to every model alike, which pulls median ratios towards 1; "
        "the 10th-percentile ratio is the least disturbed one.",
        "",
        f"CPU time of the calling thread per run (median of {result['repeats']}, models in "
        "turns; ONNX Runtime with 1 intra-op thread runs every kernel on the caller, so this "
        "excludes waiting for a core):",
        "",
        "| model | median CPU ms | vs float | vs ORT int8 |",
        "|---|---|---|---|",
    ]
    for r in result["latency"]["thread_cpu"]:
        lines.append(f"| {r['model']} | {r['median_cpu_ms']:.2f} | {r['ratio_vs_float']:.3f}x "
                     f"| {r['ratio_vs_ort_int8']:.3f}x |")
    lines += [
        "",
        "## File size",
        "",
        "| file | bytes | ratio vs float ONNX | target | weights stored as |",
        "|---|---|---|---|---|",
    ]
    for r in result["sizes"]:
        target = "" if r["target_ratio"] is None else (
            f"<= {r['target_ratio']:.2f}x {'met' if r['meets_target'] else 'MISSED'}")
        lines.append(f"| {r['file']} | {r['bytes']:,} | {r['ratio_vs_float_onnx']:.4f}x | "
                     f"{target} | {r['weights']} |")
    lines += [
        "",
        "The ONNX files can't pack 4-bit weights: QLinearConv and QGemm take 8-bit weight "
        "tensors, so `export_onnx` writes each 4-bit weight as one int8 byte (values in "
        "[-7, 7]). The IntProgram file packs them (two per byte); what else it holds is "
        "below.",
        "",
        "IntProgram file contents, bytes:",
        "",
        "| field | 8-bit weights | 4-bit weights |",
        "|---|---|---|",
    ]
    w8, w4 = result["program_bytes"]["w8"], result["program_bytes"]["w4"]
    for field in w8:
        lines.append(f"| {field} | {w8[field]:,} | {w4.get(field, 0):,} |")
    lines += [
        "",
        "## Sanity: logits vs float ONNX on evaluation crops",
        "",
        f"{result['check_crops']} crops. intq s8 and auto logits identical: "
        f"{result['sanity']['intq s8 == intq auto (every logit)']}.",
        "",
        "| model | top-1 agreement with float | logit SQNR dB |",
        "|---|---|---|",
    ]
    for label, s in result["sanity"].items():
        if isinstance(s, dict):
            lines.append(f"| {label} | {s['top1_agreement']:.3f} | {s['sqnr_db']:.1f} |")
    for label, p in result["profiles"].items():
        lines += [
            "",
            f"## ONNX Runtime profile: {label}",
            "",
            f"Kernel time summed by op type over {p['runs']} runs (1 thread; ORT's fused op "
            f"names, profiled models taking turns run by run), {p['node_ms_per_run']:.2f} ms "
            "of kernel time per run. Top 10:",
            "",
            "| op type | nodes | ms per run | share of kernel time |",
            "|---|---|---|---|",
        ]
        for o in p["ops"][:10]:
            lines.append(f"| {o['op_type']} | {o['nodes']} | {o['ms_per_run']:.3f} | "
                         f"{100 * o['share']:.1f}% |")
    intq_p, ort_p = (result["profiles"][label] for label in PROFILED)
    sums = [sum(n["median_us"] for n in p["nodes"]) for p in (intq_p, ort_p)]
    lines += [
        "",
        "## Per node: intq int8 vs ORT int8",
        "",
        f"Median kernel time per run of each node (same profile runs). Sum of the node "
        f"medians: intq {sums[0]:.0f} us, ORT {sums[1]:.0f} us ({sums[0] / sums[1]:.3f}x). "
        f"Nodes are paired by op type and rank (the k-th QLinearConv with the k-th); listed: "
        f"pairs more than {NODE_DIFF_US:.0f} us apart and nodes only one model has.",
        "",
        "| op type | # | intq node | intq us | ORT node | ORT us |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["node_differences"]:
        lines.append(f"| {r['op_type']} | {r['rank']} | {r['intq_node'] or '-'} | "
                     f"{_us(r['intq_us'])} | {r['ort_node'] or '-'} | {_us(r['ort_us'])} |")
    return "\n".join(lines) + "\n"


def _us(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--check", type=int, default=128)
    parser.add_argument("--profile-runs", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        build_seconds = build_models(tmp, args.calib)
        params = sum(p.numel() for p in load_model("efficientnet-lite0").parameters())
        result = {
            "environment": {"onnxruntime": ort.__version__, "torch": torch.__version__,
                            "cpu": _cpu_name(), "vnni": cpu_has_vnni()},
            "repeats": args.repeats, "warmup": args.warmup,
            "calibration_crops": args.calib, "check_crops": args.check,
            "build_seconds": build_seconds,
            "sizes": sizes(tmp, params),
            "program_bytes": {bits: program_breakdown(tmp / f"intq_{bits}.intq")
                              for bits in ("w8", "w4")},
            "sanity": sanity(tmp, args.check),
            "latency": latency(tmp, args.repeats, args.warmup),
            "profiles": profiles({label: tmp / f for label, f in PROFILED.items()},
                                 args.profile_runs, tmp),
        }
        result["node_differences"] = node_differences(
            *(result["profiles"][label] for label in PROFILED))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latency_efficientnet.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "latency_efficientnet.md").write_text(markdown(result))
    print(markdown(result))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def _load_average() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


if __name__ == "__main__":
    main()
