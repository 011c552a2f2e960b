"""Where PTQ loses accuracy on EfficientNet-Lite0: each quantizer's error alone at the logits.

The default recipe is calibrated once (256 calibration crops). Then every weight quantizer
and every activation quantizer is switched on alone, everything else float, and the logit
SQNR against the float model is measured on 64 evaluation crops: the noise that quantizer
alone puts on the output. The same for all weights together, all activations together and
everything (the default int8 model). Noise powers of independent sources add, so
``10·log10(Σ 10^(-SQNR_i/10))`` is the budget if errors did not interact.

    .venv/bin/python benchmarks/ptq_error_budget.py [--eval 64]
Writes benchmarks/results/ptq_error_budget.{json,md}.
"""

import argparse
import json
import math
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from intq.eval.metrics import logit_sqnr_db
from intq.graph.place import activation_quantizers, quant_layers
from intq.ptq import quantize
from intq.recipes import DEFAULT_RECIPE
from intq.zoo import load_model
from intq.zoo.natural_images import load_natural_images
from intq.zoo.registry import MODEL_ZOO

RESULTS = Path(__file__).parent / "results"
NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization


@contextmanager
def only(quantizers: dict, enabled: set[str]):
    """Fake quantization on for the quantizers named in ``enabled`` only."""
    saved = {name: q.fake_quant for name, q in quantizers.items()}
    try:
        for name, q in quantizers.items():
            q.fake_quant = name in enabled
        yield
    finally:
        for name, q in quantizers.items():
            q.fake_quant = saved[name]


def budget_db(sqnrs: list[float]) -> float:
    return -10 * math.log10(sum(10 ** (-s / 10) for s in sqnrs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--eval", type=int, default=64)
    parser.add_argument("--calib", type=int, default=256)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    model = load_model("efficientnet-lite0")
    calib = load_natural_images("calibration", args.calib, NORMALIZATION).x
    x = load_natural_images("evaluation", args.eval, NORMALIZATION).x
    with torch.no_grad():
        ref = model(x)
    qgm = quantize(model, calib, DEFAULT_RECIPE, progress=False)
    quantizers = {f"weight {n}": layer.weight_quantizer for n, layer in quant_layers(qgm)}
    quantizers |= {f"activation {n}": q for n, q in activation_quantizers(qgm)}

    def sqnr(enabled: set[str]) -> float:
        with only(quantizers, enabled), torch.no_grad():
            return logit_sqnr_db(ref, qgm(x))

    alone = {}
    for i, name in enumerate(quantizers):
        alone[name] = sqnr({name})
        print(f"[{i + 1}/{len(quantizers)}] {name}: {alone[name]:.2f} dB", file=sys.stderr)
    weights = {n for n in quantizers if n.startswith("weight")}
    totals = {"all weights": sqnr(weights), "all activations": sqnr(set(quantizers) - weights),
              "everything (the int8 model)": sqnr(set(quantizers))}
    sums = {"weights": budget_db([alone[n] for n in weights]),
            "activations": budget_db([alone[n] for n in quantizers if n not in weights])}
    result = {"recipe": DEFAULT_RECIPE, "calibration_images": args.calib,
              "evaluation_images": args.eval, "alone_sqnr_db": alone, "together_sqnr_db": totals,
              "independent_sum_sqnr_db": sums}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ptq_error_budget.json").write_text(json.dumps(result, indent=1))
    worst = sorted(alone.items(), key=lambda kv: kv[1])[:12]
    lines = [
        "# PTQ error budget, EfficientNet-Lite0, default recipe", "",
        f"{args.calib} calibration crops; logit SQNR vs float on {args.eval} evaluation crops "
        "with one quantizer on and everything else float (lower = costs more). Produced by "
        "`benchmarks/ptq_error_budget.py`.", "",
        "| quantizer (alone) | logit SQNR dB | share of the summed noise |", "|---|---|---|",
    ]
    total_noise = sum(10 ** (-s / 10) for s in alone.values())
    lines += [f"| {n} | {s:.1f} | {10 ** (-s / 10) / total_noise:.1%} |" for n, s in worst]
    lines += ["", "| together | logit SQNR dB |", "|---|---|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in totals.items()]
    lines += [f"| sum of the {k} alone (independent noise) | {v:.1f} |" for k, v in sums.items()]
    (RESULTS / "ptq_error_budget.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
