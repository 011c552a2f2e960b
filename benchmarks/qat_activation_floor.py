"""Does fine-tuning lift EfficientNet-Lite1's 8-bit-activation floor? SGD vs Adam, simulated.

The "floor" is PTQ with 16-bit weights (float, for practical purposes), 8-bit MSE activation
ranges and bias correction: what 8-bit activations cost alone. Each optimizer then fine-tunes
that PTQ model by label-free distillation from the float model (``prepare_qat_from_ptq``,
``train_qat``: activation ranges frozen, weights and biases trained) and the held-out
agreement is measured every ``--every`` steps. Sixteen-bit weights have no ONNX integer
convolution, so everything here is the simulation (fake-quantized graph in PyTorch) against
the float model on the same held-out crops: top-1 agreement, logit SQNR, KL.

    PYTHONPATH=src .venv/bin/python benchmarks/qat_activation_floor.py [--steps 50]
        [--every 25] [--optimizers sgd:0.0002,adam:0.0001] [--train 256] [--eval 256]
        [--threads 1] [--name qat_activation_floor]

Writes benchmarks/results/NAME.{json,md}.
"""

import argparse
import dataclasses
import json
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from adaround_efficientnet import _batched, load_efficientnet_lite1  # noqa: E402

from intq.eval import compare_logits  # noqa: E402
from intq.ptq import quantize  # noqa: E402
from intq.qat import FROM_PTQ_SCHEDULE, prepare_qat_from_ptq, train_qat  # noqa: E402
from intq.recipes import get_recipe  # noqa: E402
from intq.zoo.natural_images import load_natural_images  # noqa: E402
from intq.zoo.normalization import INCEPTION  # noqa: E402

RESULTS = Path(__file__).parent / "results"
CALIBRATION = 64



def _row(optimizer: str, lr: float, step: int, reference, qgm, evalx, seconds: float) -> dict:
    """The held-out comparison of ``qgm`` (evaluated in eval mode, left in training mode)."""
    c = compare_logits(reference, _batched(qgm.eval(), evalx))
    qgm.train()
    row = {"optimizer": optimizer, "lr": lr, "step": step, "top1_agreement": c.top1_agreement,
           "sqnr_db": c.sqnr_db, "kl": c.kl_divergence, "seconds": seconds}
    print(row, file=sys.stderr, flush=True)
    return row


def run(args) -> list[dict]:
    model = load_efficientnet_lite1().requires_grad_(False)
    train = load_natural_images("calibration", args.train, INCEPTION).x
    evalx = load_natural_images("evaluation", args.eval, INCEPTION).x
    reference = _batched(model, evalx)
    recipe = get_recipe("sym-per-channel-16")
    recipe = dataclasses.replace(recipe, weight=dataclasses.replace(recipe.weight,
                                                                    observer="mse"))
    ptq = quantize(model, train[:CALIBRATION], recipe, bias_correction=True, progress=False)
    rows = []
    for choice in args.optimizers.split(","):
        name, lr = choice.split(":")
        qgm = prepare_qat_from_ptq(ptq)
        start = time.perf_counter()
        rows.append(_row(name, float(lr), 0, reference, qgm, evalx, 0.0))

        def on_step(p, name=name, lr=float(lr), qgm=qgm, start=start):
            if p.step % args.every == 0 or p.step == p.total_steps:
                rows.append(_row(name, lr, p.step, reference, qgm, evalx,
                                 time.perf_counter() - start))

        train_qat(qgm, train, teacher=model, lr=float(lr), batch_size=16, epochs=10**6,
                  max_steps=args.steps, schedule=FROM_PTQ_SCHEDULE, optimizer=name,
                  on_step=on_step)
    return rows


def to_markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"EfficientNet-Lite1, W16 (MSE ranges) / A8 (MSE ranges) + bias correction, "
             f"fine-tuned by distillation on {meta['train']} crops, batch 16, measured on "
             f"{meta['eval']} held-out crops (simulated); {meta['threads']} torch thread(s).",
             "", "| optimizer | lr | step | top-1 agree | SQNR dB | KL | training s |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['optimizer']} | {r['lr']:g} | {r['step']} | {r['top1_agreement']:.3f} | "
              f"{r['sqnr_db']:.2f} | {r['kl']:.4f} | {r['seconds']:.0f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--every", type=int, default=25)
    parser.add_argument("--optimizers", default="sgd:0.0002,adam:0.0001")
    parser.add_argument("--train", type=int, default=256)
    parser.add_argument("--eval", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--name", default="qat_activation_floor")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    meta = {"train": args.train, "eval": args.eval, "threads": args.threads,
            "command": " ".join(sys.argv)}
    rows = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    (RESULTS / f"{args.name}.md").write_text(to_markdown(rows, meta))
    print(to_markdown(rows, meta))


if __name__ == "__main__":
    main()
