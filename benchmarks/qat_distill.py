"""Label-free distillation QAT vs PTQ with plain rounding on EfficientNet-Lite0 and -Lite1,
through the command line exactly as a user runs it.

For every (model, weight setting) of ``--runs``:
- PTQ: ``intq quantize MODEL --calib natural-images --calib-size TRAIN`` (MSE activation
  ranges, nearest rounding, no AdaRound), evaluated by the command itself;
- QAT: ``intq qat MODEL --data natural-images --n TRAIN --eval natural-images --holdout EVAL
  --steps S --bn-freeze 0`` (no labels: distillation from the float model, BN statistics
  of the float model from the start, calibrated activation ranges frozen), or with
  ``--start ptq|adaround`` the same fine-tuning of the PTQ / AdaRound model.
Training/calibration crops come from the natural-images 'calibration' stream, evaluation crops
from the disjoint 'evaluation' stream (random-resized crops of the same 18 photographs, see
``intq.zoo.natural_images``). Every number is the integer ONNX model in ONNX Runtime against
the float model in PyTorch on the same ``EVAL`` crops: top-1 agreement, logit SQNR, KL.
Lite1 is the user model ``benchmarks/models/efficientnet_lite1.py:efficientnet_lite1`` with
``--normalize inception`` (its training normalization), fed 224x224 crops (it was trained at
240; both float and integer models see the same crops).

    PYTHONPATH=src .venv/bin/python benchmarks/qat_distill.py [--steps 60] [--batch-size 16]
        [--lr 0.002] [--train 256] [--eval 256] [--runs lite0:8,lite1:4] [--out DIR]
        [--start float|ptq|adaround] [--name qat_distill]

Writes DIR/NAME.{json,md} (default benchmarks/results); wall times are whole command
runs (model loading, training, conversion, evaluation) on this machine, as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "lite0": ("efficientnet-lite0", []),
    "lite1": (f"{ROOT / 'benchmarks/models/efficientnet_lite1.py'}:efficientnet_lite1",
              ["--normalize", "inception"]),
}


def main() -> None:
    args = _parse()
    if args.combine:
        _combine(args)
        return
    rows = []
    for run in args.runs.split(","):
        name, bits = run.split(":")
        for row in _compare(name, int(bits), args):
            rows.append(row)
            _write(rows, args, [_meta()])


def _meta() -> dict:
    return {"python": platform.python_version(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "argv": sys.argv[1:]}


def _combine(args) -> None:
    """One table from the JSON files of several runs (e.g. run side by side for CPU time)."""
    rows, metas = [], []
    for path in args.combine:
        result = json.loads(Path(path).read_text())
        metas.append(result["meta"])
        rows += [r | {"argv": result["meta"]["argv"]} for r in result["rows"]]
    _write(rows, args, metas)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.002)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--train", type=int, default=256, help="training/calibration crops")
    p.add_argument("--eval", type=int, default=256, help="held-out evaluation crops")
    p.add_argument("--runs", default="lite0:8,lite1:4", help="MODEL:WEIGHT_BITS,...")
    p.add_argument("--methods", default="ptq,qat", help="ptq, qat or both")
    p.add_argument("--start", choices=("float", "ptq", "adaround"), default="float",
                   help="intq qat --start (default: float, the paper's QAT)")
    p.add_argument("--adaround-iters", type=int, default=1000)
    p.add_argument("--name", default="qat_distill", help="output file stem")
    p.add_argument("--qat-args", default="", help="more 'intq qat' arguments, e.g. "
                   "'--cle --weight-ranges mse'")
    p.add_argument("--combine", nargs="+", metavar="JSON",
                   help="only merge the qat_distill.json files of earlier runs into --out")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results")
    return p.parse_args()


_START_LABELS = {"float": "QAT, distillation (no labels)",
                 "ptq": "QAT from PTQ, distillation (no labels)",
                 "adaround": "QAT from AdaRound, distillation (no labels)"}


def _compare(name: str, bits: int, args):
    spec, extra = MODELS[name]
    methods = args.methods.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        if "ptq" in methods:
            ptq = ["quantize", spec, *extra, "--calib", "natural-images", "--calib-size",
                   str(args.train), "--eval", "natural-images", "--eval-size", str(args.eval),
                   "--w-bits", str(bits), "--repeats", "1", "-o", f"{tmp}/ptq.onnx"]
            report, seconds = _intq(ptq)
            yield _row(name, bits, "PTQ, nearest rounding", report["agreement"], seconds,
                       f"{args.train} calibration crops")
        if "qat" not in methods:
            return
        qat = ["qat", spec, *extra, "--data", "natural-images", "--n", str(args.train),
               "--eval", "natural-images", "--holdout", str(args.eval), "--steps",
               str(args.steps), "--epochs", str(args.steps), "--batch-size",
               str(args.batch_size), "--lr", str(args.lr), "--temperature",
               str(args.temperature), "--w-bits", str(bits), "--start", args.start,
               "-o", f"{tmp}/qat.onnx"]
        qat += (["--bn-freeze", "0"] if args.start == "float"
                else ["--adaround-iters", str(args.adaround_iters)]) + args.qat_args.split()
        report, seconds = _intq(qat)
        yield _row(name, bits, _START_LABELS[args.start], report["agreement"]["onnx"],
                   seconds, f"{args.steps} steps x {args.batch_size} of {args.train} crops, "
                   f"lr {args.lr}, T {args.temperature:g} {args.qat_args}".strip(),
                   report["train_seconds"])


def _intq(argv: list[str]) -> tuple[dict, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    command = [sys.executable, "-m", "intq.cli", *argv, "--json"]
    print("$ intq " + " ".join(argv), file=sys.stderr, flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"intq {argv[0]} failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout), seconds


def _row(name, bits, method, agreement, seconds, settings, train_seconds=None) -> dict:
    return {"model": name, "weights": f"W{bits} per-channel, A8", "method": method,
            "top1_agreement": agreement["top1"], "sqnr_db": agreement["sqnr_db"],
            "kl_divergence": agreement["kl_divergence"], "seconds": round(seconds, 1),
            "train_seconds": train_seconds, "settings": settings}


def _write(rows: list[dict], args, metas: list[dict]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    meta = metas[0] if len(metas) == 1 else {"runs": metas}
    (args.out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                          indent=2) + "\n")
    commands = "; ".join(f"`benchmarks/qat_distill.py {' '.join(m['argv'])}` (load average "
                         f"{m['load_average'][0]:.1f} at its end)" for m in metas)
    lines = [
        "# Label-free distillation QAT vs PTQ (EfficientNet-Lite0/-Lite1, natural photographs)",
        "",
        "Integer ONNX model in ONNX Runtime vs the float model in PyTorch on held-out crops, "
        f"{metas[0]['cpus']} shared cores. Produced by {commands}.",
        "",
        "| model | weights | method | top-1 agreement | logit SQNR dB | KL nats | wall s "
        "| training s | settings |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        train = "" if r["train_seconds"] is None else f"{r['train_seconds']:.0f}"
        lines.append(f"| {r['model']} | {r['weights']} | {r['method']} | "
                     f"{r['top1_agreement']:.3f} | {r['sqnr_db']:.1f} | "
                     f"{r['kl_divergence']:.4f} | {r['seconds']:.0f} | {train} | "
                     f"{r['settings']} |")
    (args.out / f"{args.name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
