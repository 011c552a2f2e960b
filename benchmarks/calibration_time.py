"""Calibration wall time: intq's default PTQ vs ONNX Runtime's MinMax quantize_static.

Both calibrate EfficientNet-Lite0 on the same natural-image crops with the machine's
default threads; the two take turns (ORT, intq, ORT, intq, ...) so load on the shared
machine hits both alike, and the ratio is median intq time / median ORT time. ORT's time
includes its pre-processing and writing the QDQ model; intq's is ``intq.quantize`` (capture,
fold, calibration with bias correction, freeze).

    .venv/bin/python benchmarks/calibration_time.py [--calib 256] [--repeats 3]
Writes benchmarks/results/calibration_time.{json,md}.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from peers import export_float_onnx, ort_quantize_static  # noqa: E402

from intq.ptq import quantize  # noqa: E402
from intq.recipes import DEFAULT_RECIPE, get_recipe  # noqa: E402
from intq.zoo import load_model  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402
from intq.zoo.registry import MODEL_ZOO  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    model = load_model("efficientnet-lite0")
    normalization = MODEL_ZOO["efficientnet-lite0"].normalization
    calib = load_natural_images("calibration", args.calib, normalization).x
    recipe = get_recipe(DEFAULT_RECIPE)
    times = {"ort": [], "intq": [], "intq_torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        float_onnx = export_float_onnx(model, (3, 224, 224), Path(tmp) / "float.onnx")
        for i in range(args.repeats):
            times["ort"].append(ort_quantize_static(float_onnx, calib, "MinMax",
                                                    Path(tmp) / "ort.onnx"))
            for key, engine in (("intq", "auto"), ("intq_torch", "torch")):
                start = time.perf_counter()
                quantize(model, calib, recipe, progress=False, engine=engine)
                times[key].append(time.perf_counter() - start)
            print(f"round {i + 1}: ORT {times['ort'][-1]:.1f} s, intq {times['intq'][-1]:.1f} s, "
                  f"intq eager {times['intq_torch'][-1]:.1f} s", file=sys.stderr)
    medians = {k: statistics.median(v) for k, v in times.items()}
    ratio = medians["intq"] / medians["ort"]
    load = os.getloadavg()
    result = {"calibration_images": args.calib, "recipe": recipe.name, "seconds": times,
              "median_seconds": medians, "ratio_intq_over_ort_minmax": ratio,
              "torch_threads": torch.get_num_threads(), "load_average": load}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "calibration_time.json").write_text(json.dumps(result, indent=1))
    lines = [
        "# Calibration time: intq default vs ORT MinMax quantize_static (EfficientNet-Lite0)",
        "",
        f"{args.calib} natural-image crops, {args.repeats} rounds taking turns, torch threads "
        f"{torch.get_num_threads()}, load average {load[0]:.1f} at the end (2 shared cores). "
        "Produced by `benchmarks/calibration_time.py`.", "",
        "| tool | runs (s) | median (s) |", "|---|---|---|",
        f"| ORT quantize_static MinMax (QDQ, per-channel) | "
        f"{', '.join(f'{t:.1f}' for t in times['ort'])} | {medians['ort']:.1f} |",
        f"| intq.quantize, {recipe.name} | {', '.join(f'{t:.1f}' for t in times['intq'])} | "
        f"{medians['intq']:.1f} |",
        f"| intq.quantize, {recipe.name}, engine=\"torch\" (eager) | "
        f"{', '.join(f'{t:.1f}' for t in times['intq_torch'])} | {medians['intq_torch']:.1f} |",
        "",
        f"intq / ORT: **{ratio:.2f}x** (target: at most 1.00x)",
    ]
    (RESULTS / "calibration_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
