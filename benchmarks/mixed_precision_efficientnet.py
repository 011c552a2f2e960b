"""Mixed precision on EfficientNet-Lite0: per-layer 4/8-bit weights chosen for a budget, vs
uniform W8 and W4 per-channel (8-bit activations, MSE ranges, bias correction everywhere).

Data: natural-image crops. The calibration stream gives CALIB crops for calibration plus
HOLDOUT more that the budget is judged on (top-1 agreement with the float model); the
evaluation stream gives EVAL other crops for a second, independent agreement figure. The
uniform rows are the search's own end points (k = 0 and all layers at 4 bits); every row is
an exported ONNX model run in ONNX Runtime; size = ONNX file bytes (4-bit weights as
packed INT4). Also writes the chosen bits per layer and the sensitivity chart of the W8
model (each quantizer alone on / alone off).

    .venv/bin/python benchmarks/mixed_precision_efficientnet.py [--max-size 3.5MB]
        [--target-agreement 0.85] [--calib 128] [--holdout 96] [--eval 128]
        [--rank-samples 24] [--sensitivity-samples 8]
Writes benchmarks/results/mixed_precision_efficientnet.{json,md,png}.
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from intq.eval import compare_logits
from intq.mixed_precision import BudgetError, MixedPrecisionSearch, parse_size
from intq.recipes import get_recipe
from intq.report.sensitivity import quantizer_sensitivity
from intq.report.sensitivity_plot import sensitivity_png
from intq.runtime.onnxruntime import OrtSession, cpu_has_vnni
from intq.zoo import load_model
from intq.zoo.natural_images import load_natural_images
from intq.zoo.registry import MODEL_ZOO

RESULTS = Path(__file__).parent / "results"
NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization
WEIGHT_TYPE = "s8" if cpu_has_vnni() else "auto"


def _ort_logits(onnx_bytes: bytes, x: torch.Tensor) -> torch.Tensor:
    session = OrtSession(onnx_bytes, threads=torch.get_num_threads())
    return torch.cat([torch.from_numpy(np.asarray(session.run(b.numpy()), np.float32))
                      for b in x.split(32)])


def _row(setting: str, onnx_bytes: bytes, refs: dict, seconds: float, **extra) -> dict:
    row = {"setting": setting, "size_bytes": len(onnx_bytes), "seconds": round(seconds, 1)}
    for split, (x, ref) in refs.items():
        c = compare_logits(ref, _ort_logits(onnx_bytes, x))
        row[f"{split}_agreement"], row[f"{split}_sqnr_db"] = c.top1_agreement, c.sqnr_db
    return row | extra


def _point_row(search: MixedPrecisionSearch, k: int, setting: str, refs: dict,
               start: float) -> dict:
    """Row of candidate k, timed from ``start`` (perf_counter) to its measurement."""
    search.measure(k)
    return _row(setting, search.points[k][3], refs, time.perf_counter() - start)


def _mixed(search: MixedPrecisionSearch, refs: dict, budget: dict) -> dict:
    label = ", ".join(f"{k.replace('_', '-')} {v}" for k, v in budget.items())
    start = time.perf_counter()
    try:
        mixed = search.choose(**budget)
    except BudgetError as exc:
        return {"setting": f"mixed ({label})", "error": str(exc)}
    low = [name for name, b in mixed.bits.items() if b == 4]
    return _row(f"mixed ({label})", mixed.onnx_bytes, refs, time.perf_counter() - start,
                budget=budget, w4_layers=low, layers=len(mixed.bits), search=mixed.as_dict())


def run(args) -> tuple[list[dict], bytes, object]:
    model = load_model("efficientnet-lite0")
    stream = load_natural_images("calibration", args.calib + args.holdout, NORMALIZATION).x
    calib, holdout = stream[: args.calib], stream[args.calib:]
    evalx = load_natural_images("evaluation", args.eval, NORMALIZATION).x
    with torch.no_grad():
        refs = {split: (x, torch.cat([model(b) for b in x.split(32)]))
                for split, x in (("holdout", holdout), ("eval", evalx))}
    search = MixedPrecisionSearch(model, calib, holdout, get_recipe("sym-per-channel-8"),
                                  weight_type=WEIGHT_TYPE, rank_samples=args.rank_samples,
                                  progress=lambda t: print(t, file=sys.stderr))
    start = time.perf_counter()
    search.rank_layers()  # calibrates uniform W8 (candidate 0) and ranks the layers
    rows = [_point_row(search, 0, "uniform W8 per-channel", refs, start)]
    print(rows[-1], file=sys.stderr)
    start = time.perf_counter()
    rows.append(_point_row(search, len(search.order), "uniform W4 per-channel", refs, start))
    print(rows[-1], file=sys.stderr)
    budgets = []
    if args.max_size:
        budgets.append({"max_size": parse_size(args.max_size)})
    if args.target_agreement:
        budgets.append({"target_agreement": args.target_agreement})
    if args.unreachable:
        budgets.append({"target_agreement": args.unreachable})
    for budget in budgets:
        rows.append(_mixed(search, refs, budget))
        print({k: v for k, v in rows[-1].items() if k != "search"}, file=sys.stderr)
    table = quantizer_sensitivity(search.points[0][1], evalx[: args.sensitivity_samples])
    png = sensitivity_png(table, "EfficientNet-Lite0 W8 per-channel A8, natural-image crops")
    return rows, png, table


def to_markdown(rows: list[dict], args) -> str:
    lines = [
        f"EfficientNet-Lite0, {args.calib} calibration crops, budget judged on {args.holdout} "
        f"held-out calibration-stream crops (layers ranked on the first {args.rank_samples}), "
        f"{args.eval} evaluation crops; every model is the "
        f"exported ONNX file run in ONNX Runtime ({WEIGHT_TYPE} weights, 8-bit activations).",
        "",
        "| setting | W4 layers | ONNX size MB | agree (held out) | SQNR dB (held out) | "
        "agree (eval) | SQNR dB (eval) | search s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['setting']} | budget not met: {r['error']} | | | | | | |")
            continue
        low = f"{len(r['w4_layers'])} of {r['layers']}" if "w4_layers" in r else (
            "all" if "W4" in r["setting"] else "none")
        lines.append(f"| {r['setting']} | {low} | {r['size_bytes'] / 1e6:.3f} | "
                     f"{r['holdout_agreement']:.3f} | {r['holdout_sqnr_db']:.1f} | "
                     f"{r['eval_agreement']:.3f} | {r['eval_sqnr_db']:.1f} | {r['seconds']} |")
    for r in rows:
        if "w4_layers" in r:
            measured = ", ".join(f"k={p['k']}: {p['size_bytes'] / 1e6:.3f} MB / "
                                 f"{p['agreement']:.3f}" for p in r["search"]["measured"])
            lines += ["", f"**{r['setting']}**: 4-bit weights in {', '.join(r['w4_layers'])}; "
                      f"points measured (k layers at 4 bits: size / held-out agreement): "
                      f"{measured}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=128)
    parser.add_argument("--holdout", type=int, default=96)
    parser.add_argument("--eval", type=int, default=128)
    parser.add_argument("--rank-samples", type=int, default=24)
    parser.add_argument("--sensitivity-samples", type=int, default=8)
    parser.add_argument("--max-size", default="3.5MB")
    parser.add_argument("--target-agreement", type=float, default=0.85)
    parser.add_argument("--unreachable", type=float, default=0.99,
                        help="also a target agreement expected out of reach (0: none)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows, png, table = run(args)
    RESULTS.mkdir(exist_ok=True)
    meta = {k: v for k, v in vars(args).items()} | {"torch_threads": torch.get_num_threads(),
                                                    "weight_type": WEIGHT_TYPE}
    out = RESULTS / "mixed_precision_efficientnet"
    out.with_suffix(".json").write_text(json.dumps(
        {**meta, "rows": rows, "sensitivity_w8": table.as_dict()}, indent=1,
        default=lambda o: None))
    out.with_suffix(".png").write_bytes(png)
    md = to_markdown(rows, args)
    out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
