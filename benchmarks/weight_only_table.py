"""The paper's Table 2 on intq's zoo: weight-only post-training quantization, 8 and 4 bits.

For every zoo model with weights and every weight scheme of the paper (asym-per-layer,
sym-per-channel, asym-per-channel) at 8 and 4 bits: ``intq.ptq.quantize`` with
``get_recipe(f"{scheme}-{bits}", weight_only=True)``: the folded weights (BN folded into
conv/linear) are fake-quantized with min/max ranges, activations stay float, no bias
correction (calibration only fixes the weight ranges, as in the paper's table). The quantized
model runs in simulation (fake-quantized float weights, torch, float32):
- Fashion-MNIST models: top-1 accuracy on the 10k test set, next to the float model's;
- EfficientNet-Lite0 (ImageNet weights, no labelled ImageNet here): top-1 agreement with
  the float model on ``--eval`` natural-image evaluation crops.
Every cell also records the logit SQNR (dB) vs the float model on the same inputs.

    .venv/bin/python benchmarks/weight_only_table.py [--eval 512] [--models a,b]
Writes benchmarks/results/weight_only_table.{json,md}; models without weights are listed as
missing.
"""

import argparse
import functools
import json
import time
import warnings
from pathlib import Path

import torch

from intq.errors import IntqError
from intq.eval import evaluate_model, logit_sqnr_db, top1_accuracy, top1_agreement
from intq.fakequant.presets import SCHEMES
from intq.ptq import quantize
from intq.recipes import get_recipe
from intq.zoo import MODEL_ZOO, Dataset, load_fashion_mnist, load_model
from intq.zoo.natural_images import load_natural_images

LITE0_NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization

RESULTS = Path(__file__).parent / "results"
BITS = (8, 4)
CALIB_IMAGES = 8  # weight-only: the data only traces the model; ranges come from the weights


@functools.cache
def dataset(name: str, n_eval: int) -> tuple[torch.Tensor, Dataset]:
    """(calibration inputs, evaluation Dataset) of zoo dataset ``name``."""
    if name == "fashion-mnist":
        return load_fashion_mnist("train").x[:CALIB_IMAGES], load_fashion_mnist("test")
    return (load_natural_images("calibration", CALIB_IMAGES, LITE0_NORMALIZATION).x,
            load_natural_images("evaluation", n_eval, LITE0_NORMALIZATION))


def score(logits: torch.Tensor, float_logits: torch.Tensor, data: Dataset) -> dict:
    """Accuracy when ``data`` has labels, else top-1 agreement with float; logit SQNR."""
    metric = top1_accuracy(logits, data.y) if data.y is not None else top1_agreement(
        float_logits, logits)
    return {"metric": metric, "logit_sqnr_db": logit_sqnr_db(float_logits, logits)}


def run_model(name: str, calib: torch.Tensor, data: Dataset) -> dict:
    model = load_model(name)
    start = time.perf_counter()
    float_logits = evaluate_model(model, data, batch_size=128, progress=False)
    cells = {}
    for bits in BITS:
        for scheme in SCHEMES:
            recipe = get_recipe(f"{scheme}-{bits}", weight_only=True)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                qgm = quantize(model, calib, recipe, progress=False)
            logits = evaluate_model(qgm, data, batch_size=128, progress=False)
            cells[f"{scheme}-{bits}"] = score(logits, float_logits, data)
            print(f"  {name} {scheme}-{bits}: {cells[f'{scheme}-{bits}']}", flush=True)
    labelled = data.y is not None
    return {
        "metric": "test accuracy" if labelled else "top-1 agreement with float",
        "eval_samples": len(data),
        "float": top1_accuracy(float_logits, data.y) if labelled else 1.0,
        "recorded_float_accuracy": MODEL_ZOO[name].float_accuracy,
        "cells": cells,
        "seconds": time.perf_counter() - start,
    }


def table(results: dict, key: str, fmt: str, with_float: bool) -> list[str]:
    head = ["model", "metric"]
    for bits in BITS:
        head += [f"{bits}-bit {scheme.replace('-', ' ')}" for scheme in SCHEMES]
    head += ["float"] if with_float else []
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        cells = [format(r["cells"][f"{s}-{b}"][key], fmt) for b in BITS for s in SCHEMES]
        metric = r["metric"] if key == "metric" else "logit SQNR dB"
        row = [name, metric, *cells] + ([format(r["float"], fmt)] if with_float else [])
        lines.append("| " + " | ".join(row) + " |")
    return lines


def markdown(result: dict) -> str:
    results = result["models"]
    lines = [
        "# Weight-only post-training quantization (the paper's Table 2 on intq's zoo)",
        "",
        "Weights only (folded conv/linear weights, min/max ranges), float activations, no "
        "bias correction, simulated in torch float32. Fashion-MNIST models: top-1 accuracy "
        f"on the 10k test set. EfficientNet-Lite0: top-1 agreement with the float model on "
        f"{result['natural_image_eval_crops']} natural-image evaluation crops (no ImageNet "
        "labels here). Produced by `benchmarks/weight_only_table.py`.",
        "",
        *table(results, "metric", ".4f", with_float=True),
        "",
        "Logit SQNR vs the float model on the same inputs (dB):",
        "",
        *table(results, "logit_sqnr_db", ".1f", with_float=False),
    ]
    if result["missing"]:
        lines += ["", "Not run: " + ", ".join(
            f"{name} ({why})" for name, why in result["missing"].items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=int, default=512, help="natural-image evaluation crops")
    parser.add_argument("--models", default=",".join(MODEL_ZOO),
                        help="comma-separated zoo names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="weight_only_table",
                        help="results file stem in benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results, missing = {}, {}
    for name in args.models.split(","):
        try:
            load_model(name)
        except IntqError as err:
            missing[name] = f"no weights file {MODEL_ZOO[name].weights}"
            print(f"skipping {name}: {err}", flush=True)
            continue
        calib, evaluation = dataset(MODEL_ZOO[name].dataset, args.eval)
        results[name] = run_model(name, calib, evaluation)
    result = {"natural_image_eval_crops": args.eval, "bits": list(BITS),
              "schemes": list(SCHEMES), "models": results, "missing": missing}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.output}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.output}.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
