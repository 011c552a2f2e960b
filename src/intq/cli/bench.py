"""``intq bench``: latency of ONNX models in ONNX Runtime or OpenVINO, alone or against
another model."""

from __future__ import annotations

import argparse
from pathlib import Path

from intq.cli import _common as common
from intq.errors import IntqError
from intq.eval.latency import LatencyStats, measure_latency, onnx_feed, ort_session, speedup

__all__ = ["RUNTIMES", "add_parser", "run"]

RUNTIMES = ("onnxruntime", "openvino")
_RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime CPU",
                  "openvino": "OpenVINO CPU (INFERENCE_PRECISION_HINT f32)"}


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure the latency of an ONNX model in ONNX Runtime or OpenVINO",
        description="Time an ONNX model in ONNX Runtime (CPU; --runtime openvino: OpenVINO "
        "CPU at f32 inference precision) on random standard-normal "
        "inputs of its input shape: median, 10th-90th percentiles and minimum over the "
        "repeats, after warm-up runs. With --vs, both models run interleaved in one "
        "measurement (so machine load hits both alike) and the ratio of medians is reported.",
    )
    p.add_argument("model", type=Path, metavar="MODEL.onnx", help="ONNX model to time")
    p.add_argument("--vs", type=Path, metavar="OTHER.onnx", help="a second model to compare")
    p.add_argument("--runtime", choices=RUNTIMES, default="onnxruntime",
                   help="runtime of MODEL: onnxruntime (default) or openvino (the 'openvino' "
                   "extra; f32 inference precision, one stream), e.g. for a QDQ model")
    p.add_argument("--vs-runtime", choices=RUNTIMES, metavar="RUNTIME",
                   help="runtime of OTHER (default: --runtime's)")
    p.add_argument("--threads", type=common.positive_int, default=1, metavar="N",
                   help="intra-op (OpenVINO: inference) threads (default: 1)")
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
    runtimes = [args.runtime, args.vs_runtime or args.runtime][:len(paths)]
    for path in paths:
        common.check_onnx_file(path)
    stats = _measure(paths, runtimes, args)
    summary = {
        "models": [{"path": str(p), "runtime": r, **s.as_dict()}
                   for p, r, s in zip(paths, runtimes, stats, strict=True)],
        "threads": args.threads,
        "batch": args.batch,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "speedup": None if args.vs is None else speedup(stats[0], stats[1]),
    }
    if args.json:
        common.print_json(summary)
    else:
        _render(summary)
    return 0


def _measure(paths: list[Path], runtimes: list[str],
             args: argparse.Namespace) -> list[LatencyStats]:
    """Interleaved latency of each model in its runtime (intq.eval.latency.measure_latency)."""
    try:
        calls = [_call(path, runtime, args) for path, runtime in zip(paths, runtimes,
                                                                      strict=True)]
        return measure_latency(calls, repeats=args.repeats, warmup=args.warmup)
    except ImportError as exc:  # the openvino extra is missing
        raise IntqError(str(exc)) from None
    except ValueError as exc:  # inputs that cannot be generated
        raise IntqError(f"cannot time {_names(paths)}: {common.one_line(exc)}") from None
    except Exception as exc:  # the runtimes' load and run errors have their own types
        raise IntqError(f"not a valid ONNX model: {_names(paths)}: "
                        f"{common.one_line(exc)}") from None


def _call(path: Path, runtime: str, args: argparse.Namespace):
    """A no-argument call running `path` once on seeded standard-normal inputs."""
    if runtime == "openvino":
        from intq.runtime.openvino import OpenVinoSession

        session = OpenVinoSession(path, threads=args.threads, batch=args.batch)
        feed = session.random_feed(args.seed)
        return lambda: session.run_all(feed)
    session = ort_session(path, args.threads)
    feed = onnx_feed(session, args.batch, args.seed)
    return lambda: session.run(None, feed)


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
    mixed = len({m["runtime"] for m in s["models"]}) > 1
    for m in s["models"]:
        label = f"{m['path']} ({m['runtime']})" if mixed else m["path"]
        table.add_row(escape(label), *(f"{m[k]:.3f} ms" for k in
                                   ("median_ms", "p10_ms", "p90_ms", "min_ms")))
    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:  # a file or pipe: wide enough for whole paths
        console.width = max(80, max(len(m["path"]) for m in s["models"]) + 48)
    console.print(table)
    names = " vs ".join(dict.fromkeys(_RUNTIME_NAMES[m["runtime"]] for m in s["models"]))
    setup = (f"{names}, {s['threads']} thread{'s' if s['threads'] > 1 else ''}, "
             f"batch {s['batch']}, {s['repeats']} timed runs after {s['warmup']} warm-up runs")
    if s["speedup"] is not None:
        setup += ", interleaved"
        a, b = (m["path"] for m in s["models"])
        ratio = s["speedup"]
        verdict = f"{ratio:.2f}x faster than" if ratio >= 1 else f"{1 / ratio:.2f}x slower than"
        console.print(f"{a} is {verdict} {b} (ratio of medians)", markup=False)
    console.print(setup, markup=False)
