"""``intq qat``: fine-tune a float model with quantization-aware training, export ONNX."""

import argparse
import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from intq.cli import _common as common
from intq.errors import IntqError, UsageError
from intq.recipes import DEFAULT_RECIPE, Recipe, get_recipe, recipe_names
from intq.zoo.data import DATASETS, load_data
from intq.zoo.dataset import Dataset
from intq.zoo.registry import ZooModel, get_zoo_model, load_model, load_weights, save_weights

__all__ = ["add_parser", "run"]

_MAX_HOLDOUT = 5000


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "qat",
        help="fine-tune a model with quantization-aware training and export ONNX",
        description="Fine-tune a trained float model with simulated quantization (BN folded "
        "with the paper's correction; BN frozen after half the steps, activation ranges "
        "after three quarters), then write the integer model as ONNX and the QAT state as "
        "safetensors. A hold-out of the training data measures float, simulated and ONNX "
        "Runtime accuracy.",
    )
    parser.add_argument("model", metavar="MODEL", help="zoo model name (see 'intq zoo')")
    parser.add_argument("--data", metavar="DATA", help=f"{' | '.join(DATASETS)} | a folder "
                        "of labelled images | a .npz (x, y) file; default: the model's dataset "
                        "(its training split)")
    parser.add_argument("--epochs", type=common.positive(int), default=1, metavar="N",
                        help="default: 1")
    parser.add_argument("--steps", type=common.positive(int), metavar="N",
                        help="stop after N steps (default: all steps of the epochs)")
    parser.add_argument("--recipe", default=DEFAULT_RECIPE, metavar="NAME",
                        help=f"{' | '.join(recipe_names())} (default: {DEFAULT_RECIPE})")
    parser.add_argument("--w-bits", type=int, metavar="N", help="weight bits (2-8)")
    parser.add_argument("--a-bits", type=int, default=8, metavar="N",
                        help="activation bits (default: 8)")
    granularity = parser.add_mutually_exclusive_group()
    granularity.add_argument("--per-channel", dest="per_channel", action="store_true",
                             default=None, help="one weight scale per output channel")
    granularity.add_argument("--per-tensor", dest="per_channel", action="store_false",
                             help="one weight scale per tensor")
    common.add_equalize_argument(parser)
    parser.add_argument("--weights", type=Path, metavar="FILE",
                        help="float .safetensors to start from (default: the shipped weights)")
    parser.add_argument("--lr", type=common.positive(float), default=0.005,
                        help="peak learning rate, cosine decay (default: 0.005)")
    parser.add_argument("--batch-size", type=common.positive(int), default=64, metavar="B",
                        help="default: 64")
    parser.add_argument("--holdout", type=common.positive(int), metavar="N",
                        help=f"validation samples held out of DATA (default: 10%%, at most "
                        f"{_MAX_HOLDOUT})")
    parser.add_argument("--n", type=common.positive(int), metavar="N",
                        help="use only the first N samples of DATA")
    common.add_normalize_argument(parser)
    parser.add_argument("--seed", type=common.int_in_range(0, 2**64 - 1), default=0,
                        help="shuffling seed (default: 0)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx",
                        help="ONNX file; the QAT state goes next to it as OUT.safetensors")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from intq.convert.from_graph import convert_to_program
    from intq.export.onnx import export_onnx
    from intq.qat import convert_qat, prepare_qat, train_qat

    inputs = [Path(p) for p in (args.weights, args.data) if p is not None]
    for path, suffix in ((args.output, ".onnx"), (args.output.with_suffix(".safetensors"),
                                                  ".safetensors")):
        common.check_output_path(path, suffix=suffix, inputs=inputs)
    entry = get_zoo_model(args.model)
    recipe = _recipe(args)
    train, holdout = _split(_labelled_data(entry, args), args.holdout)
    model = _float_model(entry, args.weights)
    _check_labels(model, train)
    qgm = prepare_qat(model, train.x[:2], recipe)
    try:
        with _progress(sys.stderr.isatty() and not args.json) as on_step:
            train_qat(qgm, train.x, train.y, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, max_steps=args.steps, seed=args.seed,
                      on_step=on_step)
        deployable = convert_qat(qgm)
        program = convert_to_program(deployable, entry.input_shape)
    except ValueError as exc:  # e.g. Inf activations after a diverging step
        raise IntqError(f"QAT failed: {common.one_line(exc)}; if the training diverged, "
                        "lower --lr") from None
    export_onnx(program, args.output)  # a full disk: one OutputError line
    checkpoint = save_weights(qgm, args.output.with_suffix(".safetensors"))
    summary = {
        "model": entry.name,
        "recipe": recipe.name,
        "equalize": recipe.equalize,
        "onnx": str(args.output),
        "checkpoint": str(checkpoint),
        "train_samples": len(train),
        "holdout_samples": len(holdout),
        "float_accuracy": _accuracy(model, holdout),
        "qat_simulated_accuracy": _accuracy(deployable, holdout),
        "onnx_accuracy": _onnx_accuracy(args.output, holdout),
    }
    print(json.dumps(summary, indent=2) if args.json else _format(summary))
    return 0


def _recipe(args: argparse.Namespace) -> Recipe:
    try:
        recipe = get_recipe(args.recipe, w_bits=args.w_bits, a_bits=args.a_bits,
                            per_channel=args.per_channel, observer="ema",
                            equalize=args.equalize)
    except ValueError as exc:
        raise UsageError(f"recipe options: {exc}") from None
    if max(recipe.weight.bits, recipe.activation.bits) > 8:
        raise UsageError(f"recipe options: {recipe.weight.bits}-bit weights / "
                         f"{recipe.activation.bits}-bit activations have no ONNX form; use 2..8")
    return recipe


def _labelled_data(entry: ZooModel, args: argparse.Namespace) -> Dataset:
    data = load_data(args.data or entry.dataset, input_shape=entry.input_shape,
                     split="calibration", n=args.n,
                     normalization=common.normalization(args, entry))
    if data.y is None:
        raise IntqError(f"{data.name} has no labels; QAT needs labelled data (class "
                        "sub-folders or a .npz with x and y)")
    if len(data) < 2:
        raise IntqError(f"{data.name} has {len(data)} sample(s); QAT needs at least 2")
    return data


def _check_labels(model: nn.Module, data: Dataset) -> None:
    with torch.no_grad():
        classes = model(data.x[:1]).shape[1]
    if int(data.y.max()) >= classes:
        raise IntqError(f"{data.name} has labels up to {int(data.y.max())} but the model has "
                        f"only {classes} classes")


def _split(data: Dataset, holdout: int | None) -> tuple[Dataset, Dataset]:
    """Seeded shuffle, then the last ``holdout`` samples for validation."""
    n = len(data)
    size = min(_MAX_HOLDOUT, max(1, n // 10)) if holdout is None else holdout
    if size >= n:
        raise UsageError(f"--holdout {size} leaves no training data out of {n} samples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    train, val = order[: n - size], order[n - size :]
    return (Dataset(data.name, data.x[train], data.y[train]),
            Dataset(f"{data.name} hold-out", data.x[val], data.y[val]))


def _float_model(entry: ZooModel, weights: Path | None) -> nn.Module:
    if weights is None:
        return load_model(entry.name)
    if weights.suffix != ".safetensors":
        raise IntqError(f"--weights {weights}: give a .safetensors file (intq never unpickles "
                        ".pt/.pth)")
    return load_weights(load_model(entry.name, pretrained=False), weights).eval()


def _accuracy(model: nn.Module, data: Dataset) -> float:
    from intq.zoo.train import evaluate_accuracy

    return evaluate_accuracy(model, data)


def _onnx_accuracy(path: Path, data: Dataset, batch_size: int = 256) -> float:
    from intq.runtime.onnxruntime import OrtSession

    session = OrtSession(path)
    correct = 0
    for x, y in data.batches(batch_size):
        logits = session.run(x.numpy())
        correct += int((np.argmax(logits, axis=1) == y.numpy()).sum())
    return correct / len(data)


@contextlib.contextmanager
def _progress(enabled: bool):
    """Yield the ``on_step`` callback: a rich bar on stderr with loss and accuracy."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("qat", total=None)

        def on_step(p) -> None:
            text = f"epoch {p.epoch} loss {p.loss:.4f} train acc {p.accuracy:.2%}"
            bar.update(task, completed=p.step, total=p.total_steps, description=text)

        yield on_step


def _format(s: dict) -> str:
    return "\n".join([
        f"model            {s['model']} ({s['recipe']}"
        + (" + cross-layer equalization)" if s["equalize"] else ")"),
        f"data             {s['train_samples']} training, {s['holdout_samples']} hold-out",
        f"hold-out top-1   float {s['float_accuracy']:.2%}, QAT simulated "
        f"{s['qat_simulated_accuracy']:.2%}, ONNX Runtime {s['onnx_accuracy']:.2%}",
        f"written          {s['onnx']} and {s['checkpoint']}",
    ])

