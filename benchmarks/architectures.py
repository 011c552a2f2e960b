"""Does any real CNN quantize end to end? intq vs ORT quantize_static vs PyTorch FX PTQ on
26 torchvision and timm architectures (issue 13).

Models: ``benchmarks/arch_zoo.py`` (random init, BatchNorm statistics re-estimated on the
calibration crops; EfficientNet-Lite0 with its published weights). Data: natural-image
crops, ImageNet normalization (Lite0: its own), the first ``--calib`` calibration crops and
the first ``--eval`` evaluation crops (disjoint streams). Every tool is judged by the top-1
agreement and logit SQNR of its quantized model against the float PyTorch model on the
evaluation crops.

- intq: the ``intq quantize`` command as a user runs it (the architecture's factory,
  ``--weights`` the state dict the benchmark measured, ``--json``); status is ``ok`` or its
  one-line error (a traceback's last exception line when the CLI crashed). The written ONNX
  is run in ONNX Runtime on the evaluation crops; its float ops are the nodes with a float
  output and no 8-bit input (DequantizeLinear and the float-output QGemm classifier read
  8-bit tensors and are not counted; neither are Constant nodes). Latency: the command's own
  int8/float median in ONNX Runtime (1 thread, batch 1, interleaved).
- ORT: ``quantize_static`` of the float ONNX (QDQ, per-channel s8 weights, u8 activations,
  MinMax), as ``peers.ort_quantize_static``.
- FX: ``prepare_fx`` / ``convert_fx`` with the x86 qconfig, as ``peers.torch_fx_ptq``, the
  converted torch model run on the evaluation crops.

Per architecture, one process builds the float model and runs ORT and FX, then the
``intq quantize`` process runs; each gets ``--timeout`` seconds, 1 thread.

    .venv/bin/python benchmarks/architectures.py [--models resnet18,dla34] [--calib 32]
        [--eval 48] [--repeats 20] [--timeout 600] [--name architectures]
    .venv/bin/python benchmarks/architectures.py --merge A.json B.json --name NAME
Writes benchmarks/results/NAME.{json,md} (after every architecture, so a stopped run keeps
its rows; --merge joins runs split with --models).
"""

import argparse
import collections
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from arch_zoo import ARCHITECTURES, BN_CROPS, build, normalization  # noqa: E402
from peers import (  # noqa: E402
    export_float_onnx,
    ort_logits,
    ort_quantize_static,
    torch_fx_ptq,
    torch_logits,
)

from intq.eval import compare_logits  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"
SHAPE = (3, 224, 224)
SQNR_MARGIN_DB = 1.0
_ERROR_CHARS = 400
_EIGHT_BIT = {2, 3}  # onnx.TensorProto UINT8, INT8
_FLOAT = {1, 10, 11, 16}  # FLOAT, FLOAT16, DOUBLE, BFLOAT16
_NO_INTEGER = "no integer implementation for "
_CLI = "import sys; sys.argv[0] = 'intq'; from intq.cli import main; sys.exit(main())"


# -- one (architecture, tool) per process ----------------------------------------------------

def float_worker(name: str, work: Path, args) -> None:
    """Build architecture ``name``, save its state dict and float reference logits into
    ``work``, then quantize it with ORT and with FX; ``work/float.json`` after each step."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    norm = normalization(name)
    calib = load_natural_images("calibration", args.calib, norm).x
    evalx = load_natural_images("evaluation", args.eval, norm).x
    model = build(name)
    torch.save(model.state_dict(), work / "weights.pt")
    reference = torch_logits(model, evalx)
    torch.save(reference, work / "reference.pt")
    result = {"parameters": sum(p.numel() for p in model.parameters()),
              "intq_blockers": intq_blockers(model, calib[:2])}
    _save(work, result)
    try:
        float_onnx = export_float_onnx(model, SHAPE, work / "float.onnx")
        seconds = ort_quantize_static(float_onnx, calib, "MinMax", work / "ort.onnx")
        result["ort"] = _compared(reference, ort_logits(work / "ort.onnx", evalx))
        result["ort"]["seconds"] = seconds
    except Exception as exc:  # a peer's failure is a result
        result["ort"] = {"error": _exception_line(exc)}
    _save(work, result)
    try:
        fx_model, seconds = torch_fx_ptq(model, calib)
        result["fx"] = _compared(reference, torch_logits(fx_model, evalx)) | {"seconds": seconds}
    except Exception as exc:
        result["fx"] = {"error": _exception_line(exc)}
    _save(work, result)


def intq_blockers(model: torch.nn.Module, example: torch.Tensor) -> dict[str, int]:
    """Every op of intq's captured, folded and fused graph that has no integer form, counted
    by kind (the CLI's error names the first three only); ``{"error": ...}`` when capture
    fails. Uses intq's graph internals: a census for developers, not a user path."""
    try:
        from intq.graph.kinds import unsupported_nodes
        from intq.graph.prepare import prepare_float_graph

        entries = unsupported_nodes(prepare_float_graph(model, example))
    except Exception as exc:
        return {"error": _exception_line(exc)}
    kinds = [re.sub(r" module '[^']*'", "", e.split(": ", 1)[1]) for e in entries]
    return dict(collections.Counter(kinds).most_common())


def _save(work: Path, result: dict) -> None:
    (work / "float.json").write_text(json.dumps(result, indent=1))


def _exception_line(exc: Exception) -> str:
    text = next((line for line in str(exc).splitlines() if line.strip()), "")
    return f"{type(exc).__name__}: {text}"[:_ERROR_CHARS]


def intq_cli(name: str, work: Path, args) -> dict:
    """Run ``intq quantize`` on architecture ``name`` (state dict from ``work``); the
    command's report, and the float ops, SQNR and agreement of the ONNX model it wrote."""
    arch, output = ARCHITECTURES[name], work / "intq.onnx"
    command = [sys.executable, "-c", _CLI, "quantize"]
    if arch.library == "intq":
        command.append(arch.constructor)
    else:
        command += [f"{Path(__file__).parent / 'arch_zoo.py'}:{name}", "--input-shape",
                    ",".join(map(str, SHAPE)), "--weights", str(work / "weights.pt")]
    command += ["--calib", "natural-images", "--eval", "natural-images", "--calib-size",
                str(args.calib), "--eval-size", str(args.eval), "--repeats", str(args.repeats),
                "--json", "-o", str(output)]
    row = {"command": " ".join(["intq", *command[3:]])}
    code, stdout, stderr, seconds = _run(command, work, args.timeout)
    row["cli_seconds"] = seconds
    if code != 0:
        return row | {"status": _error_line(stderr, code, args.timeout)}
    report = json.loads(stdout)
    lat = report.get("latency_ms") or {}
    row |= {
        "status": "ok",
        "cli_agreement": report.get("agreement"),
        "program_ops": report.get("op_counts"),
        "program_float_ops": report.get("float_ops"),
        "reported_float_ops": {k: v for k, v in report.items()
                               if "float" in k and k != "keep_float" and isinstance(v, list)},
        "int8_ms": (lat.get("int8") or {}).get("median_ms"),
        "float_ms": (lat.get("float") or {}).get("median_ms"),
        "cli_report": report,
    }
    if row["int8_ms"] and row["float_ms"]:
        row["latency_int8_over_float"] = row["int8_ms"] / row["float_ms"]
    nodes = onnx_float_nodes(output)
    row |= {"onnx_float_ops": len(nodes),
            "onnx_float_op_types": dict(collections.Counter(op for _, op in nodes))}
    evalx = load_natural_images("evaluation", args.eval, normalization(name)).x
    return row | _compared(torch.load(work / "reference.pt"), ort_logits(output, evalx))


def _run(command: list[str], cwd: Path, timeout: int) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, seconds) of ``command`` in its own process group, killed
    with the group after ``timeout`` seconds (exit code None)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=_env(), cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        code = None
    return code, stdout, stderr, round(time.perf_counter() - start, 1)


def _compared(reference: torch.Tensor, logits: torch.Tensor) -> dict:
    c = compare_logits(reference, logits.float())
    return {"sqnr_db": c.sqnr_db, "top1_agreement": c.top1_agreement,
            "top5_agreement": c.top5_agreement}


def _error_line(stderr: str, code: int | None, timeout: int) -> str:
    """The CLI's one-line error, or the last exception line of a traceback."""
    if code is None:
        return f"timeout after {timeout} s"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("intq: error:"):
            return line.removeprefix("intq: error:").strip()[:_ERROR_CHARS]
    for line in reversed(lines):
        if re.match(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\b", line):
            return f"crash: {line}"[:_ERROR_CHARS]
    return f"exit code {code}: {lines[-1] if lines else 'no output'}"[:_ERROR_CHARS]


def onnx_float_nodes(path: Path) -> list[tuple[str, str]]:
    """(name, op type) of the nodes that compute in float: a float output, no 8-bit input,
    not a Constant. Element types are propagated through the graph (ONNX shape inference
    does not know the com.microsoft quantized ops)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    types |= {t.name: t.data_type for t in graph.initializer}
    found = []
    for node in graph.node:
        out_type = _output_type(node, types)
        for out in node.output:
            types[out] = out_type
        ins = [types.get(i) for i in node.input if i]
        if node.input and out_type in _FLOAT and not _EIGHT_BIT & set(ins):
            found.append((node.name, node.op_type))
    return found


def _output_type(node, types: dict) -> int | None:
    import onnx

    op, ins = node.op_type, [types.get(i) for i in node.input]
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    if op == "QuantizeLinear":
        return ins[2] if len(ins) > 2 and ins[2] is not None else onnx.TensorProto.UINT8
    if op in ("DequantizeLinear", "DynamicQuantizeLinear"):
        return onnx.TensorProto.FLOAT
    if op == "QGemm" and len(ins) < 8:
        return onnx.TensorProto.FLOAT  # no y_scale: float output
    if op in ("ConvInteger", "MatMulInteger"):
        return onnx.TensorProto.INT32
    if op in ("Shape", "Size", "ArgMax", "ArgMin", "NonZero"):
        return onnx.TensorProto.INT64
    if op == "Cast":
        return attrs["to"]
    if op == "Constant":
        return attrs["value"].data_type if "value" in attrs else onnx.TensorProto.FLOAT
    return next((t for t in ins if t is not None), None)


def _env() -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", INTQ_BENCH_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return env


# -- the driver: every architecture, each tool in its own process ---------------------------

def run_architecture(name: str, args) -> dict:
    arch = ARCHITECTURES[name]
    row = {"architecture": name, "label": arch.label, "library": arch.library,
           "constructor": arch.constructor, "conv_only": arch.conv_only}
    with tempfile.TemporaryDirectory(prefix=f"arch-{name}-") as tmp:
        work = Path(tmp)
        command = [sys.executable, __file__, "--worker", name, "--work", tmp, "--calib",
                   str(args.calib), "--eval", str(args.eval)]
        code, _, stderr, seconds = _run(command, work, args.timeout)
        saved = work / "float.json"
        done = json.loads(saved.read_text()) if saved.is_file() else {}
        row["float_seconds"] = seconds
        row["parameters"] = done.get("parameters")
        row["intq_blockers"] = done.get("intq_blockers")
        for tool in ("ort", "fx"):
            row[tool] = done.get(tool) or {"error": _error_line(stderr, code, args.timeout)}
        if "parameters" not in done:
            row["prepare_error"] = _error_line(stderr, code, args.timeout)
            row["intq"] = {"status": "not run: the float model failed"}
        else:
            try:
                row["intq"] = intq_cli(name, work, args)
            except Exception as exc:  # the written model does not load or run
                row["intq"] = {"status": f"written model: {_exception_line(exc)}"}
    for tool in ("ort", "fx", "intq"):
        print(f"{name} {tool}: {_progress(row[tool])}", file=sys.stderr, flush=True)
    return row


def _progress(r: dict) -> str:
    if "error" in r:
        return f"error: {r['error'][:160]}"
    if r.get("status", "ok") != "ok":
        return f"intq error: {r['status'][:160]}"
    if "sqnr_db" in r:
        return f"SQNR {r['sqnr_db']:.1f} dB, agreement {r['top1_agreement']:.3f}"
    return "done"


# -- tables ----------------------------------------------------------------------------------

def _program_float_ops(q: dict) -> int:
    """Float ops of the integer program (`intq quantize --json`), else of its ONNX model."""
    reported = q.get("program_float_ops")
    return q["onnx_float_ops"] if reported is None else int(reported)


def intq_status(row: dict) -> str:
    return row["intq"]["status"]


def summary(rows: list[dict]) -> dict:
    ok = [r for r in rows if intq_status(r) == "ok"]
    compared = [r for r in ok if "sqnr_db" in r.get("ort", {})]
    conv = [r for r in rows if r["conv_only"]]
    return {
        "architectures": len(rows),
        "intq_wrote_a_model": len(ok),
        "intq_sqnr_at_least_ort_minus_1db": sum(
            r["intq"]["sqnr_db"] >= r["ort"]["sqnr_db"] - SQNR_MARGIN_DB for r in compared),
        "intq_and_ort_both_ok": len(compared),
        "conv_only": len(conv),
        "conv_only_with_0_float_ops": sum(
            intq_status(r) == "ok" and _program_float_ops(r["intq"]) == 0 for r in conv),
        "conv_only_with_0_onnx_float_nodes": sum(
            intq_status(r) == "ok" and r["intq"]["onnx_float_ops"] == 0 for r in conv),
        "ort_ok": sum("sqnr_db" in r.get("ort", {}) for r in rows),
        "fx_ok": sum("sqnr_db" in r.get("fx", {}) for r in rows),
    }


def to_markdown(result: dict) -> str:
    s, rows = result["summary"], result["rows"]
    lines = [
        f"# {s['architectures']} ImageNet architectures: intq vs ORT quantize_static vs "
        "PyTorch FX PTQ",
        "",
        f"Produced by `benchmarks/architectures.py` on intq {result['intq_commit']}. "
        f"{result['calibration_crops']} calibration / {result['evaluation_crops']} "
        "evaluation natural-image crops (224x224, ImageNet normalization; EfficientNet-Lite0: "
        "its own), the same for every tool. Random weights (seed 0) with BatchNorm statistics "
        f"re-estimated on {result['bn_crops']} calibration crops (train mode, momentum=None), "
        "so activations have data-like ranges; EfficientNet-Lite0 has its published weights. "
        "SQNR (dB) and agree (top-1 agreement) compare each quantized model with the float "
        "PyTorch model on the evaluation crops. intq: `intq quantize` (default recipe), its "
        "written ONNX run in ONNX Runtime; float ops = ONNX nodes with a float output and no "
        "8-bit input. ORT: quantize_static QDQ, per-channel s8 weights, u8 activations, "
        "MinMax. FX: x86 qconfig, converted torch model. Latency: intq int8 / float ONNX, "
        f"ONNX Runtime median, 1 thread, batch 1, {result['repeats']} interleaved repeats.",
        "",
        "| architecture | intq status | float ops left | intq SQNR | intq agree | ORT SQNR "
        "| ORT agree | FX SQNR | FX agree | int8/float latency |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for r in rows:
        q, o, f = r.get("intq", {}), r.get("ort", {}), r.get("fx", {})
        ok = intq_status(r) == "ok"
        status = "ok" if ok else _short(intq_status(r))
        if "prepare_error" in r:
            status = f"float model: {_short(r['prepare_error'])}"
        lat = q.get("latency_int8_over_float")
        for tool, x in (("ORT", o), ("FX", f)):
            if "error" in x:
                notes.append(f"- {r['label']}, {tool}: {_short(x['error'])}")
        lines.append(
            f"| {r['label']} ({r['library']} `{r['constructor']}`) | {status} | "
            f"{_float_ops(q) if ok else '-'} | {_db(q)} | {_agree(q)} | {_db(o)} | "
            f"{_agree(o)} | {_db(f)} | {_agree(f)} | {'-' if lat is None else f'{lat:.2f}x'} |")
    lines += [
        "",
        f"- intq wrote an integer model for {s['intq_wrote_a_model']} of "
        f"{s['architectures']} architectures (ORT quantize_static: {s['ort_ok']}, FX: "
        f"{s['fx_ok']}).",
        f"- intq SQNR >= ORT SQNR - {SQNR_MARGIN_DB:.0f} dB on "
        f"{s['intq_sqnr_at_least_ort_minus_1db']} of the {s['intq_and_ort_both_ok']} where "
        "both wrote a model.",
        f"- 0 float ops on {s['conv_only_with_0_float_ops']} of {s['conv_only']} conv-only "
        "architectures (all but ConvNeXt-T and MobileViT-XXS); no float ONNX node at all on "
        f"{s['conv_only_with_0_onnx_float_nodes']} (the others write their exact 256-entry "
        "tables as DequantizeLinear -> f -> QuantizeLinear, see DESIGN.md 6).",
    ]
    if notes:
        lines += ["", "Peer failures:", "", *notes]
    lines += ["", "## What intq lacks, by architecture", "",
              "Every op of intq's captured, folded and fused graph without an integer form "
              "(count), from `intq.graph.kinds.unsupported_nodes`; the CLI's error names the "
              "first three.", "", "| architecture | ops without an integer form |", "|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {_blockers(r.get('intq_blockers'))} |")
    return "\n".join(lines) + "\n"


def _blockers(blockers: dict | None) -> str:
    if blockers is None:
        return "-"
    if "error" in blockers:
        return f"capture fails: {_short(blockers['error'])}"
    return ", ".join(f"{kind} ({n})" for kind, n in blockers.items()).replace("|", "/") or "none"


def _float_ops(q: dict) -> str:
    """The float ops intq reports (its JSON list, once it has one), else the ONNX count."""
    lists = [v for k, v in q.get("reported_float_ops", {}).items() if k != "keep_float"]
    reported = lists[0] if lists else None
    if reported is None or len(reported) == q["onnx_float_ops"]:
        return str(q["onnx_float_ops"])
    return f"{len(reported)} (ONNX: {q['onnx_float_ops']})"


def _short(text: str, chars: int = 160) -> str:
    text = text.split("; keep the module")[0].replace("|", "/")
    if text.startswith(_NO_INTEGER):  # "node: Kind module 'name', node: fn and more"
        more = text.endswith(" and more")
        entries = text.removeprefix(_NO_INTEGER).removesuffix(" and more").split(", ")
        kinds = [re.sub(r" module '([^']*)'", r" (\1)", e.split(": ", 1)[-1]) for e in entries]
        text = "no integer form: " + ", ".join(kinds) + (" and more" if more else "")
    text = re.sub(r" with meta=.*| \[num_users=\d+\] =", "", text)  # fx's ShapeProp noise
    return text if len(text) <= chars else text[: chars - 3] + "..."


def _db(r: dict) -> str:
    return f"{r['sqnr_db']:.1f}" if "sqnr_db" in r else ("error" if "error" in r else "-")


def _agree(r: dict) -> str:
    return f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else "-"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(ARCHITECTURES),
                        help="comma-separated architectures (default: all)")
    parser.add_argument("--calib", type=int, default=32)
    parser.add_argument("--eval", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--timeout", type=int, default=600,
                        help="seconds per model for the float model with ORT and FX, and as "
                        "much for intq")
    parser.add_argument("--name", default="architectures", help="results file stem")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="JSON",
                        help="only merge the rows of earlier runs (e.g. split with --models) "
                        "into NAME.{json,md}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        float_worker(args.worker, args.work, args)
        return
    if args.merge:
        write(merge([json.loads(path.read_text()) for path in args.merge]), args.name)
        return
    names = args.models.split(",")
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown:
        parser.error(f"unknown architectures {unknown}; choose from {', '.join(ARCHITECTURES)}")

    start = time.perf_counter()
    result = {"intq_commit": _commit(), "calibration_crops": args.calib,
              "evaluation_crops": args.eval, "bn_crops": BN_CROPS, "repeats": args.repeats,
              "timeout_seconds": args.timeout, "threads": 1, "rows": []}
    for name in names:
        result["rows"].append(run_architecture(name, args))
        result["summary"] = summary(result["rows"])
        result["load_average"] = os.getloadavg()
        result["seconds"] = round(time.perf_counter() - start)
        write(result, args.name)
    print(to_markdown(result))
    print(json.dumps(result["summary"], indent=1))


def merge(results: list[dict]) -> dict:
    """One result from runs over disjoint (or repeated: the last wins) architectures, rows
    in the benchmark's order; settings from the first run."""
    rows = {r["architecture"]: r for result in results for r in result["rows"]}
    merged = {k: v for k, v in results[0].items() if k not in ("rows", "summary")}
    merged["seconds"] = sum(r.get("seconds", 0) for r in results)
    merged["rows"] = [rows[name] for name in ARCHITECTURES if name in rows]
    merged["summary"] = summary(merged["rows"])
    return merged


def write(result: dict, name: str) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    (RESULTS / f"{name}.md").write_text(to_markdown(result))


if __name__ == "__main__":
    main()
