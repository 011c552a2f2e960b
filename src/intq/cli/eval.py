"""``intq eval``: run a float zoo model on a dataset and report top-1 accuracy or confidence."""

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from intq.errors import IntqError
from intq.eval import evaluate_model, mean_max_softmax, top1_accuracy, top1_histogram
from intq.zoo.data import DATASETS, load_data
from intq.zoo.registry import ZooModel, get_zoo_model, load_model, load_weights

__all__ = ["add_parser", "run", "summarize_predictions"]

_SHOWN_CLASSES = 5


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a float zoo model on a dataset",
        description="Run a float zoo model over a dataset and print its top-1 accuracy "
        "(labelled data) or its confidence (mean max-softmax and the histogram of its top-1 "
        "classes, for data without labels such as natural-images).",
    )
    parser.add_argument("model", metavar="MODEL", help="zoo model name (see 'intq zoo')")
    parser.add_argument(
        "--data",
        metavar="DATA",
        help=f"{' | '.join(DATASETS)} | a folder of images (class sub-folders give labels) "
        "| a .npy (float32 NCHW) or .npz (x, y) file; default: the model's dataset "
        "(its evaluation split)",
    )
    parser.add_argument("--n", type=_positive_int, metavar="N", help="evaluate the first N samples")
    parser.add_argument(
        "--weights", type=Path, metavar="FILE", help=".safetensors state dict to load instead"
    )
    parser.add_argument(
        "--batch-size", type=_positive_int, default=64, metavar="B", help="default: 64"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    entry = get_zoo_model(args.model)
    data = load_data(
        args.data or entry.dataset, input_shape=entry.input_shape, split="evaluation", n=args.n
    )
    model = _float_model(entry, args.weights)
    try:
        logits = evaluate_model(model, data, args.batch_size)
    except ValueError as exc:
        raise IntqError(f"{entry.name} on {data.name}: {exc}") from None
    summary = {
        "model": entry.name,
        "kind": "float",
        "weights": _weights_label(entry, args.weights),
        "data": data.name,
        **summarize_predictions(logits, data.y),
        "zoo_float_accuracy": None if args.weights else entry.float_accuracy,
    }
    print(json.dumps(summary, indent=2) if args.json else _format(summary))
    return 0


def summarize_predictions(logits: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """``samples``, ``labelled``, ``top1_accuracy`` and ``correct`` (``None`` without labels),
    ``mean_max_softmax`` and ``top1_histogram`` (``{class: count}``, most frequent first)."""
    accuracy = correct = None
    if labels is not None:
        classes = logits.shape[1]
        if labels.max().item() >= classes:
            raise IntqError(
                f"the data has labels up to {labels.max().item()} but the model has only "
                f"{classes} classes"
            )
        accuracy = top1_accuracy(logits, labels)
        correct = int((logits.argmax(dim=1) == labels).sum().item())
    return {
        "samples": len(logits),
        "labelled": labels is not None,
        "top1_accuracy": accuracy,
        "correct": correct,
        "mean_max_softmax": mean_max_softmax(logits),
        "top1_histogram": top1_histogram(logits),
    }


def _float_model(entry: ZooModel, weights: Path | None) -> nn.Module:
    if weights is None:
        return load_model(entry.name)
    if weights.suffix != ".safetensors":
        raise IntqError(
            f"--weights {weights}: give a .safetensors file (intq never unpickles .pt/.pth)"
        )
    return load_weights(load_model(entry.name, pretrained=False), weights).eval()


def _weights_label(entry: ZooModel, weights: Path | None) -> str:
    if weights is not None:
        return str(weights)
    return "published" if entry.weights is None else "shipped"


def _format(s: dict) -> str:
    labels = "with labels" if s["labelled"] else "without labels: confidence only"
    lines = [
        f"model             {s['model']} ({s['kind']}, {s['weights']} weights)",
        f"data              {s['data']}, {s['samples']} samples {labels}",
    ]
    if s["labelled"]:
        recorded = s["zoo_float_accuracy"]
        note = "" if recorded is None else f"   (zoo record: {recorded:.2%})"
        lines.append(
            f"top-1 accuracy    {s['top1_accuracy']:.2%} ({s['correct']}/{s['samples']}){note}"
        )
    histogram = s["top1_histogram"]
    shown = ", ".join(f"{c} ({n})" for c, n in list(histogram.items())[:_SHOWN_CLASSES])
    lines += [
        f"mean max-softmax  {s['mean_max_softmax']:.4f}",
        f"top-1 classes     {len(histogram)} distinct; most frequent: {shown}",
    ]
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value
