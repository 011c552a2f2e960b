"""EfficientNet-Lite1 at 4-bit weights on photographs that calibration never saw.

The other AdaRound benchmarks judge a model on held-out *crops* of the same 18 photographs
that calibrated it. Here the photographs themselves are split: calibration crops come from 12
of them, evaluation crops from the other 6 (the cat, the coffee, the coins, the moon, the
rocket and Grace Hopper; both motorcycle photographs, near-duplicates, stay on the
calibration side). Crops are ``intq.zoo.crops.random_resized_crop`` of the photographs,
seeded. Settings (all with MSE per-channel weight ranges, 8-bit MSE activation ranges and
bias correction): ``floor`` (16-bit weights: what the 8-bit activations cost), ``nearest``
(4-bit, round to nearest), ``adaround`` and ``scales`` (AdaRound, and AdaRound with learned
scales, on all calibration crops, ``--iterations`` steps per layer). Measured in the
simulation (fake-quantized graph in PyTorch) against the float model: top-1 agreement, logit
SQNR, KL.

    PYTHONPATH=src .venv/bin/python benchmarks/adaround_unseen_photos.py --settings scales
        [--calib 64] [--eval 256] [--iterations 1000] [--name NAME]

Appends one row per setting to benchmarks/results/NAME.{json,md} (default
adaround_unseen_photos).
"""

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from adaround_efficientnet import _batched, load_efficientnet_lite1  # noqa: E402

from intq.adaptive_rounding import AdaRoundSettings, adaround  # noqa: E402
from intq.eval import compare_logits  # noqa: E402
from intq.ptq import quantize  # noqa: E402
from intq.recipes import get_recipe  # noqa: E402
from intq.zoo.crops import random_resized_crop  # noqa: E402
from intq.zoo.natural_images import PHOTOGRAPHS, photographs  # noqa: E402
from intq.zoo.normalization import INCEPTION  # noqa: E402

RESULTS = Path(__file__).parent / "results"
HELD_OUT = ("chelsea.png", "coffee.png", "coins.png", "moon.png", "rocket.jpg", "grace_hopper.jpg")
SETTINGS = ("floor", "nearest", "adaround", "scales")


def photo_crops(names: list[str], n: int, seed: int) -> torch.Tensor:
    """``n`` 224x224 crops, crop i of photograph ``names[i % len(names)]``, Inception-normalized."""
    photos = dict(zip((name for _, name in PHOTOGRAPHS), photographs(), strict=True))
    rng = np.random.default_rng(seed)
    pixels = np.stack([random_resized_crop(photos[names[i % len(names)]], 224, 224, rng)
                       for i in range(n)])
    return INCEPTION.apply(pixels)



def _quantize(model, calib: torch.Tensor, setting: str, iterations: int):
    recipe = get_recipe(f"sym-per-channel-{16 if setting == 'floor' else 4}")
    recipe = dataclasses.replace(recipe, weight=dataclasses.replace(recipe.weight,
                                                                    observer="mse"))
    if setting in ("floor", "nearest"):
        return quantize(model, calib, recipe, bias_correction=True, progress=False)
    settings = AdaRoundSettings(learn_scale_and_bias=setting == "scales", images=len(calib),
                                iterations=iterations)
    return adaround(model, calib, recipe, settings=settings, bias_correction=True,
                    progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", default="scales", help=f"comma-separated: {SETTINGS}")
    parser.add_argument("--calib", type=int, default=64)
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=AdaRoundSettings.iterations)
    parser.add_argument("--name", default="adaround_unseen_photos")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    model = load_efficientnet_lite1()
    seen = [name for _, name in PHOTOGRAPHS if name not in HELD_OUT]
    calib, evalx = photo_crops(seen, args.calib, 1), photo_crops(list(HELD_OUT), args.eval, 2)
    reference = _batched(model, evalx)
    path = RESULTS / f"{args.name}.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    for setting in args.settings.split(","):
        start = time.perf_counter()
        qgm = _quantize(model, calib, setting, args.iterations)
        seconds = time.perf_counter() - start
        c = compare_logits(reference, _batched(qgm.eval(), evalx))
        rows.append({"setting": setting, "calibration_crops": args.calib,
                     "evaluation_crops": args.eval, "iterations": args.iterations,
                     "top1_agreement": c.top1_agreement, "top5_agreement": c.top5_agreement,
                     "sqnr_db": c.sqnr_db, "kl": c.kl_divergence, "seconds": seconds})
        print(rows[-1], file=sys.stderr, flush=True)
        RESULTS.mkdir(exist_ok=True)
        path.write_text(json.dumps({"held_out_photographs": HELD_OUT, "rows": rows}, indent=1))
        (RESULTS / f"{args.name}.md").write_text(_markdown(rows))


def _markdown(rows: list[dict]) -> str:
    lines = ["EfficientNet-Lite1, calibrated on crops of 12 photographs, judged on crops of 6 "
             "others (simulated; 1 torch thread).", "",
             "| setting | calibration crops | AdaRound steps | top-1 agree | top-5 agree | "
             "SQNR dB | KL | PTQ s |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['setting']} | {r['calibration_crops']} | "
              f"{r['iterations'] if r['setting'] in ('adaround', 'scales') else '-'} | "
              f"{r['top1_agreement']:.3f} | {r['top5_agreement']:.3f} | {r['sqnr_db']:.2f} | "
              f"{r['kl']:.4f} | {r['seconds']:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
