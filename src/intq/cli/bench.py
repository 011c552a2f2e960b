"""``intq bench``: latency of ONNX models in ONNX Runtime and .tflite models in LiteRT, alone
or against another model."""

from __future__ import annotations

import argparse
from pathlib import Path

from intq.cli import _common as common
from intq.cli import _tflite
from intq.errors import IntqError
from intq.eval.latency import LatencyStats, model_latency, speedup

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure the latency of an ONNX model (ONNX Runtime) or .tflite model (LiteRT)",
        description="Time an ONNX model in ONNX Runtime (CPU), or a .tflite model in LiteRT "
        "(XNNPACK, or its reference kernels with --ref-kernels), on random standard-normal "
        "inputs of its input shape: median, 10th-90th percentiles and minimum over the "
        "repeats, after warm-up runs. With --vs, both models run interleaved in one "
        "measurement (so machine load hits both alike) and the ratio of medians is reported.",
    )
    p.add_argument("model", type=Path, metavar="MODEL", help=".onnx or .tflite model to time")
    p.add_argument("--vs", type=Path, metavar="OTHER", help="a second model to compare")
    p.add_argument("--ref-kernels", action="store_true",
                   help=".tflite models: LiteRT's reference kernels instead of XNNPACK")
    p.add_argument("--threads", type=common.positive_int, default=1, metavar="N",
                   help="ONNX Runtime intra-op threads (default: 1)")
    p.add_argument("--repeats", type=common.positive_int, default=100, metavar="R",
                   help="timed runs per model (default: 100)")
    p.add_argument("--warmup", type=common.int_in_range(0, None), default=10, metavar="W",
                   help="untimed runs per model first (default: 10)")
    p.add_argument("--batch", type=common.positive_int, default=1, metavar="B",
                   help="batch size for a dynamic batch dimension (default: 1)")
    p.add_argument("--seed", type=common.int_in_range(0, 2**64 - 1), default=0,
                   help="seed of the random inputs")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    paths = [args.model] if args.vs is None else [args.model, args.vs]
    for path in paths:
        if path.suffix == ".tflite":
            _tflite.tflite_session(path)
        else:
            common.check_onnx_file(path)
    stats = _measure(paths, args)
    summary = {
        "models": [{"path": str(p), **s.as_dict()} for p, s in zip(paths, stats, strict=True)],
        "threads": args.threads,
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "runtimes": [_runtime(p, args.ref_kernels) for p in paths],
        "speedup": None if args.vs is None else speedup(stats[0], stats[1]),
    }
    if args.json:
        common.print_json(summary)
    else:
        _render(summary)
    return 0


def _measure(paths: list[Path], args: argparse.Namespace) -> list[LatencyStats]:
    try:
        return model_latency(paths, threads=args.threads, repeats=args.repeats,
                             warmup=args.warmup, batch=args.batch, seed=args.seed,
                             ref_kernels=args.ref_kernels)
    except ValueError as exc:  # inputs that cannot be generated
        raise IntqError(f"cannot time {_names(paths)}: {common.one_line(exc)}") from None
    except Exception as exc:  # onnxruntime's load and run errors have their own types
        raise IntqError(f"not a valid ONNX model: {_names(paths)}: "
                        f"{common.one_line(exc)}") from None


def _runtime(path: Path, ref_kernels: bool) -> str:
    if path.suffix == ".tflite":
        return _tflite.RUNTIME_LABELS[ref_kernels]
    return "ONNX Runtime CPU"


def _names(paths: list[Path]) -> str:
    return " / ".join(str(p) for p in paths)


def _render(s: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("model", "median", "p10", "p90", "min"):
        table.add_column(header, justify="left" if header == "model" else "right",
                         overflow="fold")
    for m in s["models"]:
        table.add_row(escape(m["path"]), *(f"{m[k]:.3f} ms" for k in
                                   ("median_ms", "p10_ms", "p90_ms", "min_ms")))
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:  # a file or pipe: wide enough for whole paths
        console.width = max(80, max(len(m["path"]) for m in s["models"]) + 48)
    console.print(table)
    runtimes = " vs ".join(dict.fromkeys(s["runtimes"]))
    setup = (f"{runtimes}, {s['threads']} thread{'s' if s['threads'] > 1 else ''}, "
             f"batch {s['batch']}, {s['repeats']} timed runs after {s['warmup']} warm-up runs")
    if s["speedup"] is not None:
        setup += ", interleaved"
        a, b = (m["path"] for m in s["models"])
        ratio = s["speedup"]
        verdict = f"{ratio:.2f}x faster than" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"
        console.print(f"{a} is {verdict} {b} (ratio of medians)", markup=False)
    console.print(setup, markup=False)
