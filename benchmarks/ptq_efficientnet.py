"""PTQ fidelity on EfficientNet-Lite0: intq vs ONNX Runtime quantize_static vs PyTorch FX PTQ.

All quantizers calibrate on the same natural-image calibration crops and are judged on the
same evaluation crops by agreement with the float model (top-1, top-5), logit SQNR and KL.
intq is measured in simulation and, for the default recipe, as the exported int8 ONNX model
run in ONNX Runtime. Calibration wall time is reported as a ratio to ORT's MinMax
quantize_static measured in the same run.

    .venv/bin/python benchmarks/ptq_efficientnet.py [--calib 256] [--eval 512] [--quick]
Writes benchmarks/results/ptq_efficientnet.{json,md}.
"""

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from peers import (  # noqa: E402
    ORT_CALIBRATION_METHODS,
    export_float_onnx,
    ort_logits,
    ort_quantize_static,
    torch_fx_ptq,
)

from intq.convert.from_graph import convert_to_program  # noqa: E402
from intq.eval import compare_logits  # noqa: E402
from intq.export.onnx import export_onnx  # noqa: E402
from intq.ptq import quantize  # noqa: E402
from intq.recipes import DEFAULT_OBSERVER, get_recipe  # noqa: E402
from intq.zoo import load_model  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402
from intq.zoo.registry import MODEL_ZOO  # noqa: E402

LITE0_NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization

RESULTS = Path(__file__).parent / "results"
INTQ_OBSERVERS = ("minmax", "percentile", "mse", "kl")


def _row(tool: str, setting: str, ref: torch.Tensor, out: torch.Tensor, seconds: float) -> dict:
    c = compare_logits(ref, out)
    return {
        "tool": tool, "setting": setting, "top1_agreement": c.top1_agreement,
        "top5_agreement": c.top5_agreement, "sqnr_db": c.sqnr_db,
        "kl_divergence": c.kl_divergence, "calibration_seconds": seconds,
    }


def _batched(fn, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch]) for i in range(0, len(x), batch)])


def run(n_calib: int, n_eval: int, observers: tuple[str, ...]) -> list[dict]:
    model = load_model("efficientnet-lite0")
    calib = load_natural_images("calibration", n_calib, LITE0_NORMALIZATION).x
    evalx = load_natural_images("evaluation", n_eval, LITE0_NORMALIZATION).x
    ref = _batched(model, evalx)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        float_onnx = export_float_onnx(model, (3, 224, 224), tmp / "float.onnx")
        for method in ORT_CALIBRATION_METHODS:
            out = tmp / f"ort_{method}.onnx"
            try:
                seconds = ort_quantize_static(float_onnx, calib, method, out)
            except Exception as exc:  # a peer's failure is a result, not a crash
                rows.append({"tool": "onnxruntime quantize_static", "setting": method,
                             "error": str(exc).splitlines()[0][:200]})
                continue
            rows.append(_row("onnxruntime quantize_static", f"QDQ per-channel {method}", ref,
                             ort_logits(out, evalx), seconds))
            print(rows[-1], file=sys.stderr)
        fx_model, seconds = torch_fx_ptq(model, calib)
        rows.append(_row("pytorch fx (x86 qconfig)", "prepare_fx/convert_fx", ref,
                         _batched(fx_model, evalx), seconds))
        print(rows[-1], file=sys.stderr)
        for observer, correct in [(o, True) for o in observers] + [(DEFAULT_OBSERVER, False)]:
            recipe = get_recipe("sym-per-channel-8", observer=observer)
            start = time.perf_counter()
            qgm = quantize(model, calib, recipe, progress=False, bias_correction=correct)
            seconds = time.perf_counter() - start
            label = recipe.name + ("" if correct else " (no bias correction)")
            rows.append(_row("intq (simulated)", label, ref, _batched(qgm, evalx), seconds))
            print(rows[-1], file=sys.stderr)
            if correct and observer == DEFAULT_OBSERVER:
                program = convert_to_program(qgm, (3, 224, 224))
                path = tmp / "intq.onnx"
                export_onnx(program, path, weight_type="s8")
                rows.append(_row("intq (int8 ONNX in ONNX Runtime)", recipe.name, ref,
                                 ort_logits(path, evalx), seconds))
                print(rows[-1], file=sys.stderr)
    ort_minmax = next(r["calibration_seconds"] for r in rows if r["setting"].endswith("MinMax"))
    for r in rows:
        if "calibration_seconds" in r:
            r["calibration_time_vs_ort_minmax"] = r["calibration_seconds"] / ort_minmax
    return rows


def to_markdown(rows: list[dict], n_calib: int, n_eval: int) -> str:
    lines = [
        f"EfficientNet-Lite0, {n_calib} calibration / {n_eval} evaluation natural-image crops, "
        "W8 per-channel + A8 per-tensor for every tool.",
        "",
        "| tool | setting | top-1 agree | top-5 agree | SQNR dB | KL | calib s | vs ORT MinMax |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['tool']} | {r['setting']} | failed: {r['error']} | | | | | |")
            continue
        lines.append(
            f"| {r['tool']} | {r['setting']} | {r['top1_agreement']:.3f} | "
            f"{r['top5_agreement']:.3f} | {r['sqnr_db']:.1f} | {r['kl_divergence']:.4f} | "
            f"{r['calibration_seconds']:.1f} | {r['calibration_time_vs_ort_minmax']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--eval", type=int, default=512)
    parser.add_argument("--observers", default=",".join(INTQ_OBSERVERS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    rows = run(args.calib, args.eval, tuple(args.observers.split(",")))
    RESULTS.mkdir(exist_ok=True)
    meta = {"calibration_images": args.calib, "evaluation_images": args.eval,
            "torch_threads": torch.get_num_threads()}
    (RESULTS / "ptq_efficientnet.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    md = to_markdown(rows, args.calib, args.eval)
    (RESULTS / "ptq_efficientnet.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
