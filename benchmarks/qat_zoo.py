"""QAT vs PTQ vs float on the Fashion-MNIST zoo (the paper's Tables 4-5), and naive vs
corrected BN folding during QAT (the paper's Figures 14-15).

1. Accuracy table. For every Fashion-MNIST zoo model (shipped trained weights):
   - float: the float model on the 10k test images;
   - PTQ at W8A8 per-layer (asym-per-layer-8), W8A8 per-channel (sym-per-channel-8) and
     W4A8 per-channel (sym-per-channel-4), activations 8-bit per tensor, calibrated on the
     first ``CALIB`` training images (``intq.ptq.quantize``, the recipe's default observer),
     each with the recipe's default cross-layer equalization (on for per-layer weights);
     ``--ptq`` / ``--qat`` pick other settings of ``SETTINGS``, e.g. the same recipes with
     cross-layer equalization switched the other way;
   - QAT at the same settings: ``prepare_qat`` (corrected BN fold) from the trained float
     weights, ``train_qat`` for ``--steps`` steps of ``--batch`` (SGD momentum 0.9, cosine
     decay from ``--lr``; BN frozen at 50% of the steps, activation ranges at 75%) on the
     60k training images, each augmented once as the zoo trains (shift <= 2 px, mirror);
   - float + CLE: the float graph after cross-layer equalization (its relu6 between
     equalized layers become relu), when some setting run uses it;
   - every integer model: ``convert_qat`` (QAT) -> ``convert_to_program`` -> ``export_onnx``,
     top-1 measured in ONNX Runtime (1 thread) on the 10k test images.
   Targets (issue #6): QAT W8A8 within 0.3 points of float, QAT W4A8 within 1.5 points.
2. BN folding. MobileNet-v1 and -v2 at W4A8 per-channel, ``--bn-steps`` steps of
   ``--bn-batch`` at ``--bn-lr`` with four folds: naive (``correction=False``: weights
   folded with the batch sigma) never frozen, as in the paper's figure; naive frozen at 50%
   of the steps (separates the fold from the freeze); corrected (default: batch statistics
   of the quantized conv) and corrected paper-exact (``exact_batch_stats=True``: statistics
   of a second float conv), both frozen at 50%. Every
   ``--bn-every`` steps the deployable model (``convert_qat``, eval mode) is scored in
   simulation on the first ``BN_EVAL`` test images.

    .venv/bin/python benchmarks/qat_zoo.py [--steps 500] [--lr 0.005] [--models a,b] [--quick]
        [--ptq LABEL,...] [--qat LABEL,...]      # labels of SETTINGS ('' runs none)

Writes benchmarks/results/qat_zoo.{json,md} and benchmarks/results/qat_bn_folding.png;
progress goes to stderr. torch runs on 1 thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from intq.convert.from_graph import convert_to_program
from intq.export.onnx import export_onnx
from intq.graph import cross_layer_equalize, prepare_float_graph
from intq.ptq import quantize
from intq.qat import QATSchedule, convert_qat, prepare_qat, train_qat
from intq.recipes import Recipe, get_recipe
from intq.runtime.onnxruntime import OrtSession
from intq.zoo import Dataset, evaluate_accuracy, load_fashion_mnist, load_model
from intq.zoo.train import augment_batch

RESULTS = Path(__file__).parent / "results"
MODELS = ("mobilenet-v1-fmnist", "mobilenet-v2-fmnist", "resnet-fmnist", "inception-fmnist")
BN_MODELS = ("mobilenet-v1-fmnist", "mobilenet-v2-fmnist")
SETTINGS = {  # label -> (recipe name, equalize (None: the recipe's default), QAT target)
    "W8A8 per-layer": ("asym-per-layer-8", None, 0.3),
    "W8A8 per-layer no CLE": ("asym-per-layer-8", False, 0.3),
    "W8A8 per-channel": ("sym-per-channel-8", None, 0.3),
    "W8A8 per-channel + CLE": ("sym-per-channel-8", True, 0.3),
    "W4A8 per-channel": ("sym-per-channel-4", None, 1.5),
    "W4A8 per-channel + CLE": ("sym-per-channel-4", True, 1.5),
}
DEFAULT_SETTINGS = ("W8A8 per-layer", "W8A8 per-channel", "W4A8 per-channel")
BN_RECIPE = "sym-per-channel-4"
BN_FOLDS = {  # label -> (prepare_qat options, BN freeze at 50%)
    "naive fold (no freeze)": ({"correction": False}, False),
    "naive fold + freeze": ({"correction": False}, True),
    "corrected + freeze": ({}, True),
    "corrected paper-exact + freeze": ({"exact_batch_stats": True}, True),
}
CALIB, BN_EVAL, SEED, INPUT_SHAPE = 1000, 1000, 0, (1, 28, 28)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ort_accuracy(qgm: torch.fx.GraphModule, test: Dataset) -> float:
    """Top-1 of ``qgm``'s integer program exported to ONNX, run in ONNX Runtime."""
    session = OrtSession(export_onnx(convert_to_program(qgm, INPUT_SHAPE)).SerializeToString())
    correct = sum(int((np.argmax(session.run(x.numpy()), 1) == y.numpy()).sum())
                  for x, y in test.batches(500))
    return correct / len(test)


def recipe_for(label: str) -> Recipe:
    """The recipe of a ``SETTINGS`` label."""
    name, equalize, _target = SETTINGS[label]
    return get_recipe(name, equalize=equalize)


def describe(recipe: Recipe) -> str:
    return recipe.name + (" + CLE" if recipe.equalize else "")


def qat_finetune(model, train: Dataset, recipe: Recipe, args, *, steps: int, lr: float,
                 batch: int, prepare_options: dict | None = None, bn_freeze: bool = True,
                 every: int = 0, held_out: Dataset | None = None):
    """The trained QAT graph and its curve ``[(step, simulated top-1 of the deployable
    model on held_out)]`` every ``every`` steps (none when 0). The curve scores a
    ``convert_qat`` copy: quantizers observe in eval mode too, so running ``qgm`` itself on
    held_out would feed those images into its activation ranges."""
    qgm = prepare_qat(model, train.x[:2], recipe, **(prepare_options or {}))
    schedule = QATSchedule.for_total_steps(steps)
    if not bn_freeze:
        schedule = QATSchedule(act_range_freeze_step=schedule.act_range_freeze_step)
    curve, start = [], time.perf_counter()

    def on_step(p) -> None:
        if every and p.step % every == 0:
            curve.append((p.step, evaluate_accuracy(convert_qat(qgm), held_out)))
        if p.step % args.log_every == 0 or p.step == p.total_steps:
            tail = f" held-out {curve[-1][1]:.2%}" if curve and curve[-1][0] == p.step else ""
            log(f"    step {p.step}/{p.total_steps} loss {p.loss:.4f} train acc "
                f"{p.accuracy:.2%}{tail} ({time.perf_counter() - start:.0f} s)")

    epochs = -(-steps * batch // len(train))
    train_qat(qgm, train.x, train.y, epochs=epochs, lr=lr, batch_size=batch,
              max_steps=steps, schedule=schedule, seed=SEED, on_step=on_step)
    return qgm, curve


def accuracy_table(name: str, train: Dataset, augmented: Dataset, test: Dataset, args) -> dict:
    model = load_model(name)
    row = {"float": evaluate_accuracy(model, test), "ptq": {}, "qat": {}}
    log(f"{name}: float {row['float']:.2%}")
    if any(recipe_for(label).equalize for label in (*args.ptq, *args.qat)):
        equalized, _ = cross_layer_equalize(prepare_float_graph(model, train.x[:2]))
        row["float_cle"] = evaluate_accuracy(equalized, test)
        log(f"{name}: float + CLE {row['float_cle']:.2%}")
    for label in args.ptq:
        qgm = quantize(model, train.x[:CALIB], recipe_for(label), progress=False)
        row["ptq"][label] = ort_accuracy(qgm, test)
        log(f"{name}: PTQ {label} {row['ptq'][label]:.2%} (ONNX Runtime)")
    for label in args.qat:
        log(f"{name}: QAT {label}, {args.steps} steps")
        qgm, _ = qat_finetune(model, augmented, recipe_for(label), args, steps=args.steps,
                              lr=args.lr, batch=args.batch)
        row["qat"][label] = ort_accuracy(convert_qat(qgm), test)
        log(f"{name}: QAT {label} {row['qat'][label]:.2%} (ONNX Runtime)")
    return row


def bn_experiment(name: str, augmented: Dataset, held_out: Dataset, args) -> dict:
    model = load_model(name)
    curves = {}
    for label, (options, freeze) in BN_FOLDS.items():
        log(f"{name}: BN experiment, {label}, {args.bn_steps} steps at lr {args.bn_lr}")
        _, curves[label] = qat_finetune(model, augmented, get_recipe(BN_RECIPE), args,
                                        steps=args.bn_steps,
                                        lr=args.bn_lr, batch=args.bn_batch,
                                        prepare_options=options,
                                        bn_freeze=freeze, every=args.bn_every,
                                        held_out=held_out)
    return {"float": evaluate_accuracy(model, held_out), "curves": curves}


def gaps(row: dict) -> dict:
    """Points below float of every PTQ and QAT cell run, and whether each QAT target is met."""
    out = {}
    for label in SETTINGS:
        entry = {}
        if label in row["ptq"]:
            entry["ptq_gap"] = round(100 * (row["float"] - row["ptq"][label]), 2)
        if label in row["qat"]:
            qat_gap = 100 * (row["float"] - row["qat"][label])
            target = SETTINGS[label][2]
            entry.update(qat_gap=round(qat_gap, 2), target=target, met=qat_gap <= target)
        if entry:
            out[label] = entry
    return out


def markdown(result: dict) -> str:
    s = result["settings"]
    lines = [
        "# QAT vs PTQ vs float on the Fashion-MNIST zoo (paper Tables 4-5)", "",
        f"Command: `{s['command']}`", "",
        f"Float and integer accuracy on the {s['test_images']} Fashion-MNIST test images; "
        f"integer models run in ONNX Runtime {s['onnxruntime']} (1 thread). PTQ calibrated "
        f"on {s['calib_images']} training images ({', '.join(s['recipes'].values())}, "
        "bias correction). QAT (EMA activation ranges) from the shipped float weights: "
        f"{s['steps']} steps of {s['batch']} augmented training images, SGD momentum 0.9, "
        f"lr {s['lr']} with cosine decay, corrected BN fold, BN frozen at step "
        f"{s['bn_freeze_step']}, activation ranges at step {s['range_freeze_step']}; torch "
        f"{s['torch']}, {s['threads']} thread, commit {s['commit']}. Gap = points below "
        "float (negative: above); target: QAT W8A8 <= 0.3, QAT W4A8 <= 1.5.", "",
        "| model | float | float + CLE | " + " | ".join(
            f"PTQ {k} | QAT {k} | QAT gap (target)" for k in s["recipes"]) + " |",
        "|---" * (3 + 3 * len(s["recipes"])) + "|",
    ]
    for name, row in result["models"].items():
        cle = row.get("float_cle")
        cells = [name, f"{row['float']:.2%}", "-" if cle is None else f"{cle:.2%}"]
        for label in s["recipes"]:
            g = row["gaps"].get(label, {})
            ptq = row["ptq"].get(label)
            cells.append("-" if ptq is None else f"{ptq:.2%} ({g['ptq_gap']:+.2f})")
            if label in row["qat"]:
                cells += [f"{row['qat'][label]:.2%}",
                          f"{g['qat_gap']:+.2f} ({'met' if g['met'] else 'missed'} "
                          f"<= {g['target']})"]
            else:
                cells += ["-", "-"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "PTQ cells show their gap to float in parentheses. CLE: cross-layer "
              "equalization (``intq.graph.equalize``); gaps are against float without it."]
    bn = result.get("bn_folding")
    if bn:
        b = bn["settings"]
        lines += ["", "## BN folding during QAT (paper Figures 14-15)", "",
                  f"W4A8 per-channel, {b['steps']} steps of {b['batch']} at lr {b['lr']} "
                  f"(cosine), BN frozen at step {b['bn_freeze_step']} (except the naive fold "
                  f"without freeze), ranges at step {b['range_freeze_step']}. "
                  f"Simulated top-1 of the deployable model (inference fold, eval mode) on the "
                  f"first {b['eval_images']} test images. Plot: "
                  "`benchmarks/results/qat_bn_folding.png`.", ""]
        for name, entry in bn["models"].items():
            labels = list(entry["curves"])
            lines += [f"### {name} (float {entry['float']:.2%} on these images)", "",
                      "| step | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
            steps = [step for step, _ in entry["curves"][labels[0]]]
            for i, step in enumerate(steps):
                lines.append(f"| {step} | " + " | ".join(
                    f"{entry['curves'][k][i][1]:.2%}" for k in labels) + " |")
            lines += ["", "| fold | mean | std | min | last |", "|---|---|---|---|---|"]
            for label, stats in entry["summary"].items():
                lines.append(f"| {label} | {stats['mean']:.2%} | {stats['std']:.2%} | "
                             f"{stats['min']:.2%} | {stats['last']:.2%} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def curve_summary(curve: list) -> dict:
    acc = np.array([a for _, a in curve])
    return {"mean": float(acc.mean()), "std": float(acc.std()), "min": float(acc.min()),
            "last": float(acc[-1])}


def plot(bn: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = bn["models"]
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.2), squeeze=False)
    for ax, (name, entry) in zip(axes[0], models.items(), strict=True):
        for label, curve in entry["curves"].items():
            ax.plot(*zip(*curve, strict=True), marker=".", label=label)
        ax.axhline(entry["float"], color="grey", linestyle=":", label="float")
        ax.axvline(bn["settings"]["bn_freeze_step"], color="grey", linewidth=0.8)
        ax.set_title(f"{name}, QAT W4A8 per-channel")
        ax.set_xlabel("QAT step (vertical line: BN freeze)")
        ax.set_ylabel(f"top-1, first {bn['settings']['eval_images']} test images")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def git_commit() -> str:
    """The checked-out commit of this repository ('unknown' outside git)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                         capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def settings_list(text: str) -> tuple[str, ...]:
    """argparse type: comma-separated labels of ``SETTINGS``."""
    labels = tuple(filter(None, (t.strip() for t in text.split(","))))
    unknown = [label for label in labels if label not in SETTINGS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {unknown}; choose from {list(SETTINGS)}")
    return labels


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    p.add_argument("--steps", type=int, default=500, help="QAT steps per setting")
    p.add_argument("--lr", type=float, default=0.005, help="QAT peak learning rate")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--bn-models", default=",".join(BN_MODELS), help="'' skips the BN part")
    p.add_argument("--bn-steps", type=int, default=300)
    p.add_argument("--bn-lr", type=float, default=0.002)
    p.add_argument("--bn-batch", type=int, default=32)
    p.add_argument("--bn-every", type=int, default=20)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--ptq", type=settings_list, default=DEFAULT_SETTINGS,
                   help="comma-separated SETTINGS labels to run PTQ for")
    p.add_argument("--qat", type=settings_list, default=DEFAULT_SETTINGS,
                   help="comma-separated SETTINGS labels to run QAT for")
    p.add_argument("--test", type=int, default=10000, help="test images for the table")
    p.add_argument("--out", type=Path, default=RESULTS, help="directory for the result files")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 model, 6 QAT steps, 500 test images, no files written")
    args = p.parse_args()
    if args.quick:
        args.models, args.bn_models = MODELS[0], BN_MODELS[0]
        args.steps = args.bn_steps = 6
        args.bn_every = args.log_every = 3
        args.test = 500
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", message=".*wider scale.*")
    import onnxruntime

    started = time.perf_counter()
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test").head(args.test)
    augmented = Dataset("fashion-mnist-augmented",
                        augment_batch(train.x, torch.Generator().manual_seed(SEED)), train.y)
    schedule = QATSchedule.for_total_steps(args.steps)
    settings = {
        "command": "python " + " ".join(sys.argv), "test_images": len(test),
        "calib_images": CALIB, "train_images": len(train), "steps": args.steps,
        "batch": args.batch, "lr": args.lr, "optimizer": "SGD momentum 0.9, cosine decay",
        "bn_freeze_step": schedule.bn_freeze_step,
        "range_freeze_step": schedule.act_range_freeze_step, "threads": 1,
        "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
        "cpu": platform.machine(), "commit": git_commit(),
        "recipes": {label: describe(recipe_for(label)) for label in SETTINGS
                    if label in args.ptq or label in args.qat},
    }
    result = {"settings": settings, "models": {}}
    for name in filter(None, args.models.split(",")):
        row = accuracy_table(name, train, augmented, test, args)
        row["gaps"] = gaps(row)
        result["models"][name] = row
    bn_models = list(filter(None, args.bn_models.split(",")))
    if bn_models:
        bn_schedule = QATSchedule.for_total_steps(args.bn_steps)
        held_out = load_fashion_mnist("test").head(BN_EVAL)
        result["bn_folding"] = {
            "settings": {"steps": args.bn_steps, "lr": args.bn_lr, "batch": args.bn_batch,
                         "every": args.bn_every,
                         "eval_images": BN_EVAL, "recipe": BN_RECIPE,
                         "bn_freeze_step": bn_schedule.bn_freeze_step,
                         "range_freeze_step": bn_schedule.act_range_freeze_step},
            "models": {},
        }
        for name in bn_models:
            entry = bn_experiment(name, augmented, held_out, args)
            entry["summary"] = {k: curve_summary(c) for k, c in entry["curves"].items()}
            result["bn_folding"]["models"][name] = entry
    settings["seconds"] = round(time.perf_counter() - started, 1)
    text = markdown(result)
    if args.quick:
        print(text)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qat_zoo.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "qat_zoo.md").write_text(text)
    if bn_models:
        plot(result["bn_folding"], args.out / "qat_bn_folding.png")
    print(text)
    log(f"done in {settings['seconds']:.0f} s")


if __name__ == "__main__":
    main()
