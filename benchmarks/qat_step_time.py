"""QAT training-step time vs float training-step time on the Fashion-MNIST zoo models.

For each model: one float training step (conv -> BN -> activation, SGD) and one QAT step
(``prepare_qat``, W8A8 per-channel, activation quantizers observing, BN not yet frozen) for
each way of folding BN: corrected with one conv (default), corrected with the paper's
float conv for the batch statistics (``exact_batch_stats=True``) and naive. Steps of all
variants take turns on the same batches (round robin), so machine noise hits them alike;
the ratio is median QAT step / median float step. Batch 64, 1 torch thread (``--threads``).
``--breakdown`` adds the default QAT step with the activation quantizers, the weight
quantizers or all quantizers switched off (observe and fake_quant off: what is left is the
BN fold), which splits the QAT overhead between them, and the default step late in
training, after the BN and activation-range freezes (the layers then compute the inference
graph: no batch statistics, no observers).

    .venv/bin/python benchmarks/qat_step_time.py [--steps 30] [--models a,b] [--breakdown]
        [--threads 1]
Writes benchmarks/results/qat_step_time.{json,md}.
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from intq.graph.place import activation_quantizers
from intq.qat import QATSchedule, apply_schedule, prepare_qat, qat_layers
from intq.zoo import MODEL_ZOO, load_fashion_mnist, load_model

RESULTS = Path(__file__).parent / "results"
BATCH = 64
VARIANTS = {  # label -> prepare_qat options (None: the float model)
    "float": None,
    "QAT, corrected fold, one conv (default)": {},
    "QAT, corrected fold, paper's float-conv statistics": {"exact_batch_stats": True},
    "QAT, naive fold": {"correction": False},
}
BREAKDOWN = {  # label -> quantizers of the default QAT step switched off
    "default, activation quantizers off": ("activations",),
    "default, weight quantizers off": ("weights",),
    "default, all quantizers off": ("activations", "weights"),
}
FROZEN = "default, after the BN and range freezes"
FREEZE_ALL = QATSchedule(bn_freeze_step=1, act_range_freeze_step=1)


def _switch_off(model, kinds: tuple[str, ...]) -> None:
    quantizers = []
    if "activations" in kinds:
        quantizers += [q for _, q in activation_quantizers(model)]
    if "weights" in kinds:
        quantizers += [layer.weight_quantizer for _, layer in qat_layers(model)]
    for quantizer in quantizers:
        quantizer.observe, quantizer.fake_quant = False, False


def _step(model, opt, x, y) -> float:
    start = time.perf_counter()
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return time.perf_counter() - start


def measure(name: str, steps: int, train, breakdown: bool) -> dict[str, float]:
    """Median step seconds of every variant, steps taken in turns on the same batches."""
    extra = [*BREAKDOWN, FROZEN] if breakdown else []
    variants = {**VARIANTS, **{label: {} for label in extra}}
    models = {}
    for label, options in variants.items():
        model = load_model(name).train()
        if options is not None:
            model = prepare_qat(model, train.x[:2], "sym-per-channel-8", **options)
            apply_schedule(model, QATSchedule(), 0)
            if label in extra:
                model(train.x[:BATCH])  # ranges and qparams exist before switches change
            if label in BREAKDOWN:
                _switch_off(model, BREAKDOWN[label])
            if label == FROZEN:
                apply_schedule(model, FREEZE_ALL, 1)
        models[label] = (model, torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9))
    times = {label: [] for label in models}
    for i in range(steps + 3):
        x, y = train.x[i * BATCH:(i + 1) * BATCH], train.y[i * BATCH:(i + 1) * BATCH]
        for label, (model, opt) in models.items():
            seconds = _step(model, opt, x, y)
            if i >= 3:  # warm-up
                times[label].append(seconds)
    return {label: statistics.median(t) for label, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    fmnist = [n for n, m in MODEL_ZOO.items() if m.dataset == "fashion-mnist"]
    parser.add_argument("--models", default=",".join(fmnist))
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the default QAT step with quantizers switched off")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train = load_fashion_mnist("train").head(BATCH * (args.steps + 3))
    rows = {}
    for name in args.models.split(","):
        medians = measure(name, args.steps, train, args.breakdown)
        rows[name] = {"median_step_seconds": medians,
                      "ratio_vs_float": {k: v / medians["float"] for k, v in medians.items()}}
        print(name, {k: round(v, 2) for k, v in rows[name]["ratio_vs_float"].items()},
              file=sys.stderr)
    load = os.getloadavg()
    result = {"batch": BATCH, "steps": args.steps, "threads": args.threads,
              "torch": torch.__version__,
              "load_average": load, "models": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "qat_step_time.json").write_text(json.dumps(result, indent=2))
    labels = list(VARIANTS) + ([*BREAKDOWN, FROZEN] if args.breakdown else [])
    lines = [
        "# QAT step time / float step time (Fashion-MNIST zoo)", "",
        f"Batch {BATCH}, {args.threads} torch thread(s), median of {args.steps} steps per "
        f"variant taken in turns on the same batches (load average {load[0]:.1f} on 2 shared "
        "cores). W8A8 per-channel, activation quantizers observing (EMA), BN not frozen: the "
        "most expensive phase of QAT. Produced by `benchmarks/qat_step_time.py`.", "",
        "| model | float step ms | " + " | ".join(labels[1:]) + " |",
        "|---" * len(labels) + "|---|",
    ]
    for name, row in rows.items():
        ratios = row["ratio_vs_float"]
        lines.append(f"| {name} | {row['median_step_seconds']['float'] * 1e3:.1f} | "
                     + " | ".join(f"{ratios[k]:.2f}x" for k in labels[1:]) + " |")
    (RESULTS / "qat_step_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
