"""``intq qat``: fine-tune a float model with quantization-aware training, export ONNX.

With labels, the loss is cross-entropy; without (or with ``--distill``) the float model is
the teacher and the loss its KL divergence to the QAT model (``intq.qat.distill``). Under
``torchrun`` every process takes its share of each global batch (``intq.qat.distributed``)
and only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

from intq.cli import _common as common
from intq.cli._distributed import process_group
from intq.errors import IntqError, UsageError
from intq.modelspec import LoadedModel, load_model_spec
from intq.qat.train import OPTIMIZERS
from intq.recipes import DEFAULT_RECIPE, Recipe, get_recipe, recipe_names
from intq.zoo.dataset import Dataset
from intq.zoo.registry import MODEL_ZOO

__all__ = ["add_parser", "run"]

_MAX_HOLDOUT = 5000
_DEFAULT_BN_FREEZE = 0.5
_DEFAULT_LR = {"float": 0.005, "ptq": 1e-4, "adaround": 1e-4}
# Settings a resumed run must share with the run that wrote the checkpoint.
_RUN_KEYS = ("model", "weights", "data", "n", "eval", "holdout", "recipe", "w_bits", "a_bits",
             "per_channel", "equalize", "epochs", "steps", "batch_size", "lr", "seed",
             "distill", "temperature", "bn_freeze", "act_ranges", "normalize", "start",
             "adaround_iters", "adaround_images", "adaround_scales", "adaround_granularity",
             "weight_ranges", "optimizer", "learn_scales", "crops")

_CALIBRATION_SAMPLES = 256  # as intq quantize's default --calib-size
_START_LABELS = {"float": "float model", "ptq": "PTQ model",
                 "adaround": "PTQ model with AdaRound weights"}
_STARTS = tuple(_START_LABELS)

_DESCRIPTION = """\
Fine-tune a trained float model with simulated quantization, then write the integer model as
ONNX and the QAT state as safetensors. --start float (default) is the paper's QAT: BN folded
with its correction, BN statistics frozen after --bn-freeze of the steps, activation ranges
from PTQ calibration, frozen (or with --act-ranges ema the paper's EMA, frozen after three
quarters of the steps). --start ptq fine-tunes the PTQ model instead ('intq quantize' on the
first 256 samples of DATA, with bias correction: BN folded and frozen, ranges frozen), and
--start adaround the PTQ model with AdaRound weights (slower to start, the best start for
4-bit weights).

MODEL, --weights and DATA are taken as by 'intq quantize'. With labels in DATA (a zoo
dataset with labels, class sub-folders, a .npz with y) the loss is cross-entropy; without
labels, or with --distill, it is distillation from the float model: T^2 KL(softmax(float/T)
|| softmax(qat/T)). A hold-out (of DATA, or --eval DATA) measures the float, simulated and
ONNX Runtime models: accuracy with labels, agreement with the float model always.

Several processes: torchrun --nproc_per_node N -m intq.cli qat ... (same arguments; the
--batch-size global batch is split over the processes; only rank 0 writes).
Files are written only when the whole run succeeds; --checkpoint files are complete.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "qat", help="fine-tune a model with quantization-aware training and export ONNX",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL",
                        help="zoo name, FILE.py:FACTORY or package.module:FACTORY")
    parser.add_argument("--weights", type=Path, metavar="FILE", help="state dict: "
                        ".safetensors, or torch.save'd tensors (never unpickles code)")
    parser.add_argument("--input-shape", type=common.parse_input_shape, metavar="C,H,W",
                        help="input shape of a model outside the zoo (default: DATA's)")
    _add_data_arguments(parser)
    _add_training_arguments(parser)
    _add_recipe_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.onnx",
                        help="ONNX file; the QAT state goes next to it as OUT.safetensors")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run)


def _add_data_arguments(parser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", metavar="DATA", help=f"training data: {common.DATA_HELP}; "
                      "default: the zoo model's dataset (its training split)")
    data.add_argument("--n", type=common.positive_int, metavar="N",
                      help="use only the first N samples of DATA")
    common.add_crops_argument(data, "--data", "--n")
    data.add_argument("--eval", metavar="DATA", help="held-out data (its evaluation split); "
                      "default: a hold-out of DATA")
    data.add_argument("--holdout", type=common.positive_int, metavar="N",
                      help=f"hold-out samples (default: 10%% of DATA, at most {_MAX_HOLDOUT}; "
                      "with --eval: its default size)")
    common.add_normalize_argument(data)


def _add_training_arguments(parser) -> None:
    train = parser.add_argument_group("training")
    train.add_argument("--epochs", type=common.positive_int, default=1, metavar="N",
                       help="default: 1")
    train.add_argument("--steps", type=common.positive_int, metavar="N",
                       help="stop after N steps (default: all steps of the epochs)")
    train.add_argument("--lr", type=common.positive(float),
                       help=f"peak learning rate, cosine decay (default: {_DEFAULT_LR['float']} "
                       f"for --start float, {_DEFAULT_LR['ptq']} from a PTQ start, which is "
                       "already close)")
    train.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd",
                       help="sgd (momentum 0.9, the paper's) or adam (default: sgd; adam "
                       "moves each weight by about --lr whatever its size: with --learn-scales "
                       "and a small --lr it can help 4-bit weights from a PTQ start, and it "
                       "wrecks 8-bit ones, see BENCHMARKS.md 11 and 14)")
    train.add_argument("--learn-scales", action="store_true",
                       help="train each weight quantizer's scale too (learned step size, LSQ; "
                       "--start ptq or adaround)")
    train.add_argument("--batch-size", type=common.positive_int, default=64, metavar="B",
                       help="global batch, split over torchrun processes (default: 64)")
    train.add_argument("--start", choices=_STARTS, default="float",
                       help="what training starts from: the float model (the paper's QAT), "
                       "the PTQ model, or the PTQ model with AdaRound weights (default: float)")
    train.add_argument("--bn-freeze", type=_fraction, metavar="F",
                       help="freeze BN statistics after this fraction of the steps (0: use "
                       f"the float model's from the start; default: {_DEFAULT_BN_FREEZE}; "
                       "--start float only)")
    train.add_argument("--act-ranges", choices=("calibrated", "ema"),
                       help="activation ranges: calibrated by PTQ with the recipe's observer "
                       "on DATA and frozen, or the paper's EMA of batch min/max (default: "
                       "calibrated; --start float only)")
    train.add_argument("--distill", action="store_true",
                       help="distill from the float model even when DATA has labels")
    train.add_argument("--temperature", type=common.positive(float), default=1.0,
                       metavar="T", help="distillation temperature (default: 1)")
    train.add_argument("--seed", type=common.int_in_range(0, 2**64 - 1), default=0,
                       help="shuffling seed (default: 0)")
    train.add_argument("--checkpoint", type=Path, metavar="FILE.safetensors",
                       help="write the training state here (atomically) every "
                       "--checkpoint-every steps")
    train.add_argument("--checkpoint-every", type=common.positive_int, metavar="N",
                       help="steps between checkpoints (default: one epoch)")
    train.add_argument("--resume", type=Path, metavar="FILE.safetensors",
                       help="continue the run that wrote this checkpoint")


def _add_recipe_arguments(parser) -> None:
    q = parser.add_argument_group("quantization")
    q.add_argument("--recipe", default=DEFAULT_RECIPE, metavar="NAME",
                   help=f"{' | '.join(recipe_names())} (default: {DEFAULT_RECIPE})")
    q.add_argument("--w-bits", type=int, metavar="N", help="weight bits (2-8)")
    q.add_argument("--a-bits", type=int, default=8, metavar="N",
                   help="activation bits (default: 8)")
    granularity = q.add_mutually_exclusive_group()
    granularity.add_argument("--per-channel", dest="per_channel", action="store_true",
                             default=None, help="one weight scale per output channel")
    granularity.add_argument("--per-tensor", dest="per_channel", action="store_false",
                             help="one weight scale per tensor")
    common.add_equalize_argument(q)
    common.add_weight_observer_argument(q)
    common.add_adaround_settings_arguments(q)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


@dataclasses.dataclass(frozen=True)
class _Run:
    """What the processes train: the float model, data, recipe and where outputs go."""

    loaded: LoadedModel
    recipe: Recipe
    input_shape: tuple[int, int, int]
    train: Dataset
    holdout: Dataset
    distill: bool
    outputs: tuple[Path, Path]
    resume: dict[str, torch.Tensor] | None


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    with process_group() as (rank, world), contextlib.redirect_stdout(sys.stderr), \
            common.warnings_as_notes():
        setup = _setup(args, world)
        qgm, train_seconds = _train(setup, args, rank, world)
        if rank != 0:
            return 0
        summary = _finish(setup, qgm, args) | {"processes": world,
                                               "train_seconds": round(train_seconds, 1)}
    summary["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        common.print_json(summary)
    else:
        print(_format(summary))
    return 0


# -- set-up: everything checked before training ----------------------------------------

def _setup(args: argparse.Namespace, world: int) -> _Run:
    _check_start(args)
    outputs = _outputs(args)
    recipe = _recipe(args)
    resume = _resume_state(args)
    if args.batch_size % world:
        raise UsageError(f"--batch-size {args.batch_size} does not split evenly over {world} "
                         "processes")
    zoo = MODEL_ZOO.get(args.model)
    input_shape = _input_shape(args, zoo)
    train, holdout = _data(args, zoo, input_shape)
    with common.status(f"loading {args.model}"):
        loaded = load_model_spec(args.model, weights=args.weights)
    distill = args.distill or train.y is None
    _check_model(loaded.model, train, None if distill else train.y)
    return _Run(loaded, recipe, input_shape, train, holdout, distill, outputs, resume)


def _check_start(args: argparse.Namespace) -> None:
    """Fill the defaults of --start; refuse the float start's options with a PTQ start."""
    args.lr = _DEFAULT_LR[args.start] if args.lr is None else args.lr
    if args.start == "float":
        if args.weight_ranges != "minmax":
            raise UsageError(f"--weight-ranges {args.weight_ranges} needs --start ptq or "
                             "adaround (QAT from float tracks the weights' min/max each step)")
        if args.learn_scales:
            raise UsageError("--learn-scales needs --start ptq or adaround (QAT from float "
                             "tracks the weights' min/max each step)")
        args.bn_freeze = _DEFAULT_BN_FREEZE if args.bn_freeze is None else args.bn_freeze
        args.act_ranges = args.act_ranges or "calibrated"
        return
    given = [f"--{k.replace('_', '-')}" for k in ("bn_freeze", "act_ranges")
             if getattr(args, k) is not None]
    if given:
        raise UsageError(f"--start {args.start} takes no {' or '.join(given)}: its BN is "
                         "folded and its calibrated ranges frozen (those are for --start float)")


def _outputs(args: argparse.Namespace) -> tuple[Path, Path]:
    inputs = [Path(p) for p in (args.weights, args.data, args.eval, args.resume) if p]
    inputs.append(Path(args.model.rsplit(":", 1)[0]))
    onnx_path = common.check_output_path(args.output, suffix=".onnx", inputs=inputs)
    state = common.check_output_path(args.output.with_suffix(".safetensors"),
                                     suffix=".safetensors", inputs=inputs)
    if args.checkpoint is not None:
        common.check_output_path(args.checkpoint, suffix=".safetensors",
                                 inputs=[p for p in inputs if p != args.resume])
        if args.checkpoint in (onnx_path, state):
            raise UsageError(f"--checkpoint {args.checkpoint} is an output of the run")
    if args.checkpoint_every is not None and args.checkpoint is None:
        raise UsageError("--checkpoint-every needs --checkpoint FILE")
    return onnx_path, state


def _recipe(args: argparse.Namespace) -> Recipe:
    try:
        observer = {"observer": "ema"} if args.start == "float" else {}
        recipe = get_recipe(args.recipe, w_bits=args.w_bits, a_bits=args.a_bits,
                            per_channel=args.per_channel, equalize=args.equalize,
                            weight_observer=args.weight_ranges, **observer)
    except ValueError as exc:
        raise UsageError(f"recipe options: {exc}") from None
    if max(recipe.weight.bits, recipe.activation.bits) > 8:
        raise UsageError(f"recipe options: {recipe.weight.bits}-bit weights / "
                         f"{recipe.activation.bits}-bit activations have no ONNX form; use 2..8")
    if args.optimizer == "adam" and recipe.weight.bits >= 8:
        common.note(f"warning: --optimizer adam moves every weight by about --lr whatever its "
                    f"size, which wrecked {recipe.weight.bits}-bit EfficientNets in "
                    "BENCHMARKS.md 11 and 14; sgd is the safer choice above 4 bits")
    return recipe


def _input_shape(args: argparse.Namespace, zoo) -> tuple[int, int, int]:
    if zoo is not None:
        if args.input_shape not in (None, zoo.input_shape):
            raise UsageError(f"--input-shape: {zoo.name} takes inputs of shape "
                             f"{','.join(map(str, zoo.input_shape))}")
        return zoo.input_shape
    shape = args.input_shape or common.data_input_shape(args.data)
    if shape is None:
        raise UsageError(f"give --input-shape C,H,W for {args.model} (not a zoo model), or "
                         "--data as a dataset or a .npy/.npz file")
    return shape


def _data(args: argparse.Namespace, zoo, input_shape) -> tuple[Dataset, Dataset]:
    spec = args.data or (zoo.dataset if zoo is not None else None)
    if spec is None:
        raise UsageError(f"give --data DATA for {args.model} (not a zoo model)")
    normalization = common.normalization(args, zoo)
    if args.crops is not None and args.eval is None:
        raise UsageError("--crops needs --eval DATA: crops of the training images cannot be "
                         "held out")
    data = common.load_dataset(spec, input_shape, "calibration", args.n, "training",
                               normalization, args.crops)
    if args.eval is None:
        return _split(data, args.holdout)
    holdout = common.load_dataset(args.eval, input_shape, "evaluation", args.holdout,
                                  "evaluation", normalization)
    if args.eval == spec and spec not in ("fashion-mnist", "natural-images"):
        common.note("warning: --eval is the training data, so the hold-out is not held out")
    return data, holdout


def _split(data: Dataset, holdout: int | None) -> tuple[Dataset, Dataset]:
    """Seeded shuffle, then the last ``holdout`` samples for validation."""
    n = len(data)
    size = min(_MAX_HOLDOUT, max(1, n // 10)) if holdout is None else holdout
    if size >= n:
        raise UsageError(f"--holdout {size} leaves no training data out of {n} samples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    train, val = order[: n - size], order[n - size :]
    return _subset(data, train, data.name), _subset(data, val, f"{data.name} hold-out")


def _subset(data: Dataset, idx: torch.Tensor, name: str) -> Dataset:
    return Dataset(name, data.x[idx], None if data.y is None else data.y[idx])


def _check_model(model: nn.Module, data: Dataset, labels: torch.Tensor | None) -> None:
    """The model must map two samples to (batch, classes) logits covering the labels."""
    try:
        with torch.no_grad():
            logits = model(data.x[:2])
    except Exception as exc:
        raise IntqError(f"the model fails on {data.name} inputs of shape "
                        f"{tuple(data.x[:2].shape)}: {common.one_line(exc)}") from None
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise IntqError(f"the model must return (batch, classes) logits, got {got}")
    if labels is not None and int(labels.max()) >= logits.shape[1]:
        raise IntqError(f"{data.name} has labels up to {int(labels.max())} but the model has "
                        f"only {logits.shape[1]} classes")


# -- training ------------------------------------------------------------------------------

def _train(setup: _Run, args: argparse.Namespace, rank: int, world: int):
    from intq.qat import FROM_PTQ_SCHEDULE, make_distributed, train_qat

    model, train = setup.loaded.model, setup.train
    total = _total_steps(len(train), args.batch_size, world, args.epochs, args.steps)
    if args.start == "float":
        qgm, schedule = _float_start(setup, args, total)
    else:
        qgm, schedule = _ptq_start(setup, args), FROM_PTQ_SCHEDULE
    trained = make_distributed(qgm) if world > 1 else qgm
    per_rank = args.batch_size // world
    every = args.checkpoint_every or max(1, total // args.epochs)
    start = time.perf_counter()
    try:
        with _progress(rank == 0 and common.progress_enabled()) as on_step:
            train_qat(trained, train.x, None if setup.distill else train.y,
                      teacher=model if setup.distill else None, temperature=args.temperature,
                      epochs=args.epochs, lr=args.lr, batch_size=per_rank,
                      max_steps=args.steps, schedule=schedule, seed=args.seed,
                      on_step=on_step, resume=setup.resume,
                      checkpoint=_checkpoint_writer(args, rank), checkpoint_every=every,
                      optimizer=args.optimizer)
    except ValueError as exc:  # e.g. Inf activations after a diverging step
        raise IntqError(f"QAT failed: {common.one_line(exc)}; if the training diverged, "
                        "lower --lr") from None
    return qgm, time.perf_counter() - start


def _float_start(setup: _Run, args: argparse.Namespace, total: int):
    """The paper's QAT graph of the float model and its schedule."""
    from intq.qat import QATSchedule, calibrate_activation_ranges, prepare_qat

    model, train = setup.loaded.model, setup.train
    qgm = prepare_qat(model, train.x[:2], setup.recipe)
    schedule = dataclasses.replace(QATSchedule.for_total_steps(total),
                                   bn_freeze_step=int(total * args.bn_freeze))
    if args.act_ranges == "calibrated":
        samples = min(len(train.x), _CALIBRATION_SAMPLES)
        with common.status(f"calibrating activation ranges on {samples} samples"):
            calibrate_activation_ranges(qgm, model, train.x[:samples], setup.recipe)
        schedule = dataclasses.replace(schedule, act_range_freeze_step=0)
    return qgm, schedule


def _ptq_start(setup: _Run, args: argparse.Namespace):
    """The PTQ (or AdaRound) model of the first samples of the training data, trainable. A
    resumed run only needs the graph's shape: the checkpoint holds every weight and range."""
    from intq.adaptive_rounding import adaround
    from intq.ptq import quantize
    from intq.qat import prepare_qat_from_ptq

    model, calib = setup.loaded.model, setup.train.x[:_CALIBRATION_SAMPLES]
    show = common.progress_enabled()
    try:
        if args.start == "adaround" and setup.resume is None:
            ptq = adaround(model, calib, setup.recipe, settings=common.adaround_settings(args),
                           progress=show)
        else:
            ptq = quantize(model, calib, setup.recipe, bias_correction=setup.resume is None,
                           progress=show)
    except ValueError as exc:
        raise IntqError(f"post-training quantization failed: {common.one_line(exc)}") from exc
    return prepare_qat_from_ptq(ptq, learn_weight_scales=args.learn_scales)


def _total_steps(n: int, global_batch: int, world: int, epochs: int, steps: int | None) -> int:
    per_epoch = n // global_batch if world > 1 else -(-n // global_batch)
    if per_epoch == 0:
        raise IntqError(f"{n} training samples make no global batch of {global_batch} "
                        f"over {world} processes; lower --batch-size")
    return per_epoch * epochs if steps is None else min(steps, per_epoch * epochs)


def _run_settings(args: argparse.Namespace) -> dict[str, str]:
    return {"intq_qat_run": json.dumps({k: _plain(getattr(args, k)) for k in _RUN_KEYS})}


def _plain(value):
    return str(value) if isinstance(value, Path) else value


def _checkpoint_writer(args: argparse.Namespace, rank: int):
    if args.checkpoint is None or rank != 0:
        return None
    from intq.qat import save_checkpoint

    def write(state: dict[str, torch.Tensor]) -> None:
        try:
            save_checkpoint(state, args.checkpoint, _run_settings(args))
        except OSError as exc:
            raise IntqError(f"cannot write {args.checkpoint}: {exc.strerror}") from None

    return write


def _resume_state(args: argparse.Namespace) -> dict[str, torch.Tensor] | None:
    if args.resume is None:
        return None
    from intq.qat import load_checkpoint

    state, metadata = load_checkpoint(args.resume)
    saved = json.loads(metadata.get("intq_qat_run", "null") or "null")
    if not isinstance(saved, dict):
        raise IntqError(f"--resume {args.resume}: not a checkpoint of 'intq qat'")
    ours = json.loads(_run_settings(args)["intq_qat_run"])
    differ = [k for k in _RUN_KEYS if saved.get(k) != ours[k]]
    if differ:
        shown = ", ".join(f"--{k.replace('_', '-')} {saved.get(k)} (now {ours[k]})"
                          for k in differ)
        raise IntqError(f"--resume {args.resume} comes from a run with other settings: {shown}")
    return state


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
            text = f"epoch {p.epoch} loss {p.loss:.4f} top-1 {p.accuracy:.2%}"
            bar.update(task, completed=p.step, total=p.total_steps, description=text)

        yield on_step


# -- rank 0: convert, export, evaluate, write ------------------------------------------------

def _finish(setup: _Run, qgm, args: argparse.Namespace) -> dict:
    from intq.convert.from_graph import convert_to_program
    from intq.export.onnx import export_onnx
    from intq.qat import convert_qat
    from intq.zoo.registry import save_weights

    try:
        with common.status("converting to an integer program and ONNX"):
            deployable = convert_qat(qgm)
            onnx_bytes = export_onnx(convert_to_program(deployable, setup.input_shape)
                                     ).SerializeToString()
    except ValueError as exc:
        raise IntqError(f"conversion after QAT failed: {common.one_line(exc)}") from None
    quality = _evaluate(setup, deployable, onnx_bytes)
    onnx_path, state_path = setup.outputs
    common.write_output(onnx_path, onnx_bytes)
    try:
        save_weights(qgm, state_path)
    except OSError as exc:  # a full disk
        raise IntqError(f"cannot write {state_path}: {exc.strerror}") from None
    return {
        "model": setup.loaded.label,
        "model_spec": setup.loaded.spec,
        "weights": setup.loaded.weights,
        "recipe": setup.recipe.name,
        "equalize": setup.recipe.equalize,
        "start": args.start,
        "loss": f"distillation (T={args.temperature:g})" if setup.distill else "cross-entropy",
        "onnx": str(onnx_path),
        "checkpoint": str(state_path),
        "train_samples": len(setup.train),
        "holdout_samples": len(setup.holdout),
    } | quality


def _evaluate(setup: _Run, deployable: nn.Module, onnx_bytes: bytes) -> dict:
    """Float, simulated and ONNX Runtime logits on the hold-out: accuracies (with labels)
    and agreement with the float model."""
    from intq.eval import evaluate_model
    from intq.runtime.onnxruntime import OrtSession

    data, show = setup.holdout, common.progress_enabled()
    reference = evaluate_model(setup.loaded.model, data, progress=show)
    simulated = evaluate_model(deployable, data, progress=show)
    session = OrtSession(onnx_bytes, threads=torch.get_num_threads())
    ort = common.onnx_logits(session.run, data, 64, what="the integer model")
    labels = data.y
    return {
        "float_accuracy": _accuracy(reference, labels),
        "qat_simulated_accuracy": _accuracy(simulated, labels),
        "onnx_accuracy": _accuracy(ort, labels),
        "agreement": {"simulated": common.agreement(reference, simulated),
                      "onnx": common.agreement(reference, ort)},
    }


def _accuracy(logits: torch.Tensor, labels: torch.Tensor | None) -> float | None:
    from intq.eval import top1_accuracy

    return None if labels is None else top1_accuracy(logits, labels)


def _format(s: dict) -> str:
    lines = [
        f"model            {s['model']} ({s['recipe']}"
        + (" + cross-layer equalization)" if s["equalize"] else ")") + f", {s['loss']}, "
        f"from the {_START_LABELS[s['start']]}",
        f"data             {s['train_samples']} training, {s['holdout_samples']} hold-out; "
        f"{s['processes']} process(es), {s['train_seconds']:.1f} s training",
    ]
    if s["float_accuracy"] is not None:
        lines.append(f"hold-out top-1   float {s['float_accuracy']:.2%}, QAT simulated "
                     f"{s['qat_simulated_accuracy']:.2%}, ONNX Runtime {s['onnx_accuracy']:.2%}")
    agree = s["agreement"]["onnx"]
    lines.append(f"vs float (ONNX)  top-1 agreement {agree['top1']:.2%}, logit SQNR "
                 f"{agree['sqnr_db']:.1f} dB, KL {agree['kl_divergence']:.4f} nats")
    lines.append(f"written          {s['onnx']} and {s['checkpoint']}")
    return "\n".join(lines)

