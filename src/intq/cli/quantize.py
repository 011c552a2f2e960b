"""``intq quantize``: post-training quantization of a float CNN into an integer ONNX model,
reported against the float model: size, accuracy or agreement, and latency in ONNX Runtime."""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import fnmatch
import math
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from intq.adaptive_rounding import adaround
from intq.cli import _common as common
from intq.cli import _mixed as mixed_cli
from intq.cli import _report_dir as report_dir
from intq.convert.from_graph import FloatIsland, convert_to_program, float_islands
from intq.convert.program import IntProgram
from intq.convert.serialize import save_program
from intq.errors import IntqError, UsageError
from intq.eval import evaluate_model, top1_accuracy
from intq.eval.latency import model_latency, speedup
from intq.export.onnx import EXACT_ANY_X86, EXACT_VNNI, export_onnx
from intq.export.onnx_qdq import ONNX_FORMATS, export_onnx_qdq
from intq.export.tflite import export_tflite
from intq.modelspec import LoadedModel, load_model_spec, spec_label
from intq.observers.factory import OBSERVER_KINDS
from intq.outputs import temporary_folder
from intq.ptq import quantize
from intq.recipes import (
    DEFAULT_OBSERVER,
    DEFAULT_RECIPE,
    Recipe,
    default_equalize,
    get_recipe,
    recipe_names,
)
from intq.runtime.onnxruntime import OrtSession, cpu_has_vnni
from intq.zoo.data import DATASETS
from intq.zoo.dataset import Dataset
from intq.zoo.normalization import Normalization
from intq.zoo.registry import DEFAULT_MODEL, MODEL_ZOO

__all__ = ["add_parser", "run"]

# (calibration samples, evaluation samples) by data; anything else: _OTHER_SIZES.
_DEFAULT_SIZES = {"fashion-mnist": (1000, 2000), "natural-images": (256, 256)}
_OTHER_SIZES = (256, 256)
_EXPORTABLE_BITS = (2, 8)
_LATENCY_WARMUP = 5
_FLOAT_ONNX_OPSET = 17
_ARRAY_SUFFIXES = (".npy", ".npz")
_CALIB_HOLDOUT = "<held out of the calibration data>"
_MIN_SPLIT = 10  # fewer array samples than this are not split into calibration + hold-out

_DESCRIPTION = f"""\
Post-training quantization (PTQ) of a trained float CNN: calibrate on a few hundred inputs,
convert to an integer program and write it as an ONNX model that ONNX Runtime runs with
integer kernels. Then compare it with the float model on held-out data (top-1 accuracy with
labels; top-1/top-5 agreement, logit SQNR and KL divergence always) and measure both in
ONNX Runtime (1 thread, batch 1, median of interleaved repeats).

MODEL: a zoo name (see 'intq zoo'; default {DEFAULT_MODEL}), FILE.py:FACTORY or
package.module:FACTORY (a function returning an nn.Module; give --input-shape unless the
data fixes it).

Data defaults: the model's dataset ('fashion-mnist': calibration on the first 1000 training
images, evaluation on the first 2000 test images; 'natural-images': 256 calibration crops,
256 evaluation crops from disjoint streams). Other DATA: the first 256 samples each.

Ops without an integer form (LayerNorm, attention, custom code) and layers named with
--keep-float stay float inside the written model (float islands between Dequantize and
Quantize); the report lists each one with where it comes from and why. --weight-only and
asymmetric per-channel weights have no integer ONNX form: such runs write no file and report
the simulated (fake-quantized) model against the float model in PyTorch; -o is refused.

Output: MODEL.int8.onnx (MODEL.wNaM.onnx for other bit widths) in the current directory,
written only when the whole run succeeds (temp file + rename; nothing is left on errors or
Ctrl-C). -o OUT.tflite writes a LiteRT model instead (int8, NHWC input; agreement and
latency are then LiteRT's, with XNNPACK). ONNX weights are int8 on CPUs with VNNI
(fastest, exact there), otherwise the types that are exact on every x86-64 CPU; the report
says which.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="quantize a float model into an integer ONNX model (PTQ) and report the cost",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL,
                   help=f"zoo name, FILE.py:FACTORY or package.module:FACTORY "
                   f"(default: {DEFAULT_MODEL})")
    p.add_argument("--weights", type=Path, metavar="FILE",
                   help="state dict: .safetensors, or torch.save'd tensors (never unpickles code)")
    p.add_argument("--input-shape", type=common.parse_input_shape, metavar="C,H,W",
                   help="input shape of a model outside the zoo")
    data = p.add_argument_group("data")
    data.add_argument("--calib", metavar="DATA", help=f"calibration data: {common.DATA_HELP}")
    data.add_argument("--calib-size", type=common.positive_int, metavar="N",
                      help="calibration samples (default: see above)")
    common.add_crops_argument(data, "--calib", "--calib-size")
    data.add_argument("--eval", metavar="DATA", help="held-out evaluation data (same forms)")
    data.add_argument("--eval-size", type=common.positive_int, metavar="N",
                      help="evaluation samples (default: see above)")
    common.add_normalize_argument(data)
    q = p.add_argument_group("quantization")
    q.add_argument("--recipe", default=DEFAULT_RECIPE, metavar="NAME",
                   help=f"{', '.join(recipe_names())} (default: {DEFAULT_RECIPE})")
    q.add_argument("--w-bits", type=common.int_in_range(*_EXPORTABLE_BITS), metavar="N",
                   help="weight bits, 2..8 (default: the recipe's)")
    q.add_argument("--a-bits", type=common.int_in_range(*_EXPORTABLE_BITS), default=8,
                   metavar="N", help="activation bits, 2..8 (default: 8)")
    granularity = q.add_mutually_exclusive_group()
    granularity.add_argument("--per-tensor", dest="per_channel", action="store_false",
                             default=None, help="one weight scale per layer")
    granularity.add_argument("--per-channel", dest="per_channel", action="store_true",
                             help="one weight scale per output channel")
    common.add_equalize_argument(q)
    q.add_argument("--bias-correction", action=argparse.BooleanOptionalAction, default=True,
                   help="remove the mean output shift of weight quantization from the biases "
                   "(default: on)")
    q.add_argument("--weight-only", action="store_true",
                   help="quantize weights only (simulated: no ONNX file)")
    q.add_argument("--observer", choices=OBSERVER_KINDS, default=DEFAULT_OBSERVER,
                   help=f"activation range estimator (default: {DEFAULT_OBSERVER})")
    common.add_weight_observer_argument(q)
    q.add_argument("--keep-float", action="append", default=[], metavar="NAME",
                   help="keep this module (qualified name, or fnmatch pattern of layers) in "
                   "float; repeatable (simulated: no ONNX file)")
    _add_adaround_options(p)
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", type=Path, metavar="OUT.onnx",
                     help="integer model to write: .onnx, or .tflite for LiteRT "
                     "(default: MODEL.int8.onnx)")
    out.add_argument("--onnx-format", choices=ONNX_FORMATS, default="qoperator",
                     help="qoperator (default: QLinearConv, QGemm, ... for ONNX Runtime) or qdq "
                     "(QuantizeLinear/DequantizeLinear around float ops, int8 weights: for "
                     "OpenVINO, TensorRT and other QDQ consumers; see 'intq eval/bench "
                     "--runtime openvino')")
    out.add_argument("--save-program", type=Path, metavar="FILE",
                     help="also write the IntProgram (.safetensors, see intq.convert.serialize)")
    out.add_argument("--repeats", type=common.positive_int, default=50, metavar="R",
                     help="latency repeats per model (default: 50)")
    out.add_argument("--seed", type=common.int_in_range(0, 2**64 - 1), default=0, metavar="N",
                     help="seed of torch and of the latency inputs (default: 0)")
    out.add_argument("--json", action="store_true",
                     help="print one JSON object on stdout (progress and notes go to stderr)")
    report_dir.add_argument(out)
    mixed_cli.add_arguments(p)
    p.set_defaults(run=run)


def _add_adaround_options(p) -> None:
    ada = p.add_argument_group("AdaRound: learned weight rounding (intq.adaptive_rounding)")
    ada.add_argument("--adaround", action="store_true",
                     help="learn each weight's rounding (up or down) layer by layer so the "
                     "layer's output matches the float model's on the calibration data")
    common.add_adaround_settings_arguments(ada)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """What a run will do, decided (and checked) before any slow work."""

    recipe: Recipe
    input_shape: tuple[int, int, int]
    calib: str
    evaluation: str | None
    output: Path | None
    program: Path | None
    simulated_reason: str | None
    notes: tuple[str, ...]
    normalization: Normalization | None


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    # user code (a model factory, its forward) may print: stdout is for the report only
    with common.warnings_as_notes(), contextlib.redirect_stdout(sys.stderr):
        plan = _plan(args)
        mixed_cli.check(args, plan.simulated_reason)
        report_dir.check(args)
        calib, evaluation = _load_data(plan, args)
        with common.status(f"loading {args.model}"):
            loaded = load_model_spec(args.model, weights=args.weights)
            _check_model_runs(loaded, calib, evaluation)
        for text in plan.notes:
            common.note(text)
        if plan.evaluation == _CALIB_HOLDOUT and evaluation is None:
            common.note(f"{plan.calib} has {len(calib)} samples, all used for calibration: "
                        "accuracy cannot be judged; give --eval DATA")
        recipe, leaves = _keep_float(plan.recipe, loaded.model, args.keep_float)
        mixed = None
        if mixed_cli.requested(args):
            qgm, calib_seconds, mixed = mixed_cli.search(args, loaded.model, calib, recipe)
            recipe = mixed.recipe
        else:
            qgm, calib_seconds = _calibrate(loaded.model, calib, recipe, leaves, args)
        report_files = report_dir.contents(args, qgm, calib, evaluation, mixed)
        report = {
            "model": loaded.label,
            "model_spec": loaded.spec,
            "weights": loaded.weights,
            "recipe": recipe.name,
            "equalize": recipe.equalize,
            "bias_correction": args.bias_correction,
            "adaround": args.adaround,
            "adaround_scales": args.adaround and args.adaround_scales,
            "adaround_granularity": args.adaround_granularity if args.adaround else None,
            "weight_spec": recipe.weight.describe(),
            "activation_spec": None if recipe.weight_only else recipe.activation.describe(),
            "keep_float": list(args.keep_float),
            "calibration": {"data": calib.name, "samples": len(calib)},
            "calibration_seconds": round(calib_seconds, 2),
            "evaluation": None if evaluation is None else _data_info(evaluation),
            **mixed_cli.report_entry(mixed, calib),
        }
        if plan.simulated_reason is None:
            report |= _integer_run(plan, args, loaded, qgm, calib, evaluation)
        else:
            report |= _simulated_run(plan, loaded.model, qgm, evaluation)
    report_dir.write(args.report, report_files)
    report["seconds"] = round(time.perf_counter() - start, 1)
    if args.json:
        common.print_json(report)
    else:
        _render(report)
    return 0


# -- planning: everything that can be checked before the slow work -------------------------

def _plan(args: argparse.Namespace) -> _Plan:
    recipe = _recipe(args)
    reason = _no_integer_form(recipe)
    zoo = MODEL_ZOO.get(args.model)
    input_shape = _input_shape(args, zoo)
    calib, evaluation, notes = _data_specs(args, zoo, input_shape)
    if reason is not None and (args.output or args.save_program):
        flag = "-o" if args.output else "--save-program"
        raise UsageError(f"{flag}: {reason}, so nothing can be written; drop {flag} to get "
                         "the simulated accuracy only")
    output = program = None
    inputs = _input_paths(args)
    if reason is None:
        label = "mixed" if mixed_cli.requested(args) else _bits_label(recipe)
        default = Path(f"{spec_label(args.model)}.{label}.onnx")
        target = args.output or default
        suffix = ".tflite" if target.suffix == ".tflite" else ".onnx"
        output = common.check_output_path(target, suffix=suffix, inputs=inputs)
    if args.save_program is not None:
        program = common.check_output_path(args.save_program, suffix=".safetensors",
                                           inputs=[*inputs, *filter(None, [output])])
    return _Plan(recipe, input_shape, calib, evaluation, output, program, reason, notes,
                 common.normalization(args, zoo))


def _recipe(args: argparse.Namespace) -> Recipe:
    try:
        recipe = get_recipe(args.recipe, w_bits=args.w_bits, a_bits=args.a_bits,
                            weight_only=args.weight_only, observer=args.observer,
                            weight_observer=args.weight_ranges)
    except ValueError as exc:
        raise UsageError(f"--recipe: {exc}") from None
    if args.w_bits is None and not _EXPORTABLE_BITS[0] <= recipe.weight.bits <= 8:
        raise UsageError(f"--recipe {args.recipe}: weights of {recipe.weight.bits} bits have "
                         "no ONNX form; use 2..8 bits")
    if args.per_channel is not None and args.per_channel != recipe.weight.per_channel:
        weight = dataclasses.replace(recipe.weight, per_channel=args.per_channel)
        old, new = "-per-layer-", "-per-channel-"
        if not args.per_channel:
            old, new = new, old
        recipe = Recipe(recipe.name.replace(old, new, 1), weight, recipe.activation)
    equalize = default_equalize(recipe) if args.equalize is None else args.equalize
    return dataclasses.replace(recipe, equalize=equalize)


def _no_integer_form(recipe: Recipe) -> str | None:
    """Why the recipe cannot become an integer ONNX model (None if it can)."""
    if recipe.weight_only:
        return "weight-only quantization has no integer ONNX form"
    if recipe.weight.per_channel and not recipe.weight.symmetric:
        return "asymmetric per-channel weights have no integer ONNX form"
    return None


def _bits_label(recipe: Recipe) -> str:
    w, a = recipe.weight.bits, recipe.activation.bits
    return "int8" if (w, a) == (8, 8) else f"w{w}a{a}"


def _input_shape(args: argparse.Namespace, zoo) -> tuple[int, int, int]:
    if zoo is not None:
        if args.input_shape is not None and args.input_shape != zoo.input_shape:
            raise UsageError(f"--input-shape: {zoo.name} takes inputs of shape "
                             f"{_shape_text(zoo.input_shape)}")
        return zoo.input_shape
    shape = (args.input_shape or common.data_input_shape(args.calib)
             or common.data_input_shape(args.eval))
    if shape is None:
        raise UsageError(f"give --input-shape C,H,W for {args.model} (not a zoo model), or "
                         f"--calib as a dataset ({', '.join(DATASETS)}) or a .npy/.npz file")
    return shape


def _data_specs(args, zoo, input_shape) -> tuple[str, str | None, tuple[str, ...]]:
    """Calibration and evaluation DATA specs, and notes about the choices made."""
    default = zoo.dataset if zoo is not None else common.dataset_for_shape(input_shape)
    calib = args.calib or default
    if calib is None:
        raise UsageError(f"give --calib DATA: no zoo dataset has {_shape_text(input_shape)} "
                         "inputs")
    evaluation = args.eval or default
    notes = []
    if args.eval is None and Path(calib).suffix in _ARRAY_SUFFIXES:
        evaluation = _CALIB_HOLDOUT  # the array's own preprocessing, whatever it was
        notes.append(f"--eval: samples of {calib} held out from calibration (normalized like "
                     "it); give --eval DATA to use other data")
    if zoo is None and evaluation != _CALIB_HOLDOUT:
        for flag, given, used in (("--calib", args.calib, calib), ("--eval", args.eval,
                                                                   evaluation)):
            if given is None and used is not None:
                notes.append(f"{flag} {used} (the dataset of {_shape_text(input_shape)} "
                             f"inputs); give {flag} DATA to use your own")
    if evaluation is None:
        notes.append("no evaluation data (give --eval DATA): accuracy is not measured")
    elif args.eval is not None and args.eval == args.calib and args.eval not in DATASETS:
        notes.append("warning: --eval is the calibration data, so accuracy is not held out")
    return calib, evaluation, tuple(notes)


def _input_paths(args: argparse.Namespace) -> list[Path]:
    """Files the run reads (an output must never replace one of them)."""
    paths = [args.weights, args.calib, args.eval, args.model.rsplit(":", 1)[0]]
    return [Path(p) for p in paths if p is not None]


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


# -- loading and checking ------------------------------------------------------------------

def _load_data(plan: _Plan, args: argparse.Namespace) -> tuple[Dataset, Dataset | None]:
    if plan.evaluation == _CALIB_HOLDOUT:
        return _split_calibration(plan, args)
    calib_n = args.calib_size or _DEFAULT_SIZES.get(plan.calib, _OTHER_SIZES)[0]
    calib = common.load_dataset(plan.calib, plan.input_shape, "calibration", calib_n,
                                "calibration", plan.normalization, args.crops)
    if plan.evaluation is None:
        return calib, None
    eval_n = args.eval_size or _DEFAULT_SIZES.get(plan.evaluation, _OTHER_SIZES)[1]
    evaluation = common.load_dataset(plan.evaluation, plan.input_shape, "evaluation", eval_n,
                                     "evaluation", plan.normalization)
    return calib, evaluation


def _split_calibration(plan: _Plan, args: argparse.Namespace) -> tuple[Dataset, Dataset | None]:
    """Calibration samples first, the next ones (at most the evaluation size) held out; with
    too few samples for both, 80/20 unless --calib-size asked for them all."""
    data = common.load_dataset(plan.calib, plan.input_shape, "calibration", None,
                               "calibration", plan.normalization, args.crops)
    n, calib_n = len(data), args.calib_size or _OTHER_SIZES[0]
    if n <= calib_n:
        if args.calib_size is not None or n < _MIN_SPLIT:
            return data, None
        calib_n = math.ceil(0.8 * n)
    end = min(n, calib_n + (args.eval_size or _OTHER_SIZES[1]))
    held = Dataset(f"{data.name}[{calib_n}:{end}] (held out)", data.x[calib_n:end],
                   None if data.y is None else data.y[calib_n:end])
    return data.head(calib_n), held


def _check_model_runs(loaded: LoadedModel, data: Dataset, evaluation: Dataset | None) -> None:
    """One float forward pass on two samples: the model must return (batch, classes), as
    many classes as the evaluation labels need."""
    x = data.x[:2]
    try:
        with torch.no_grad():
            y = loaded.model(x)
    except Exception as exc:
        raise IntqError(f"model {loaded.label} fails on {data.name} inputs of shape "
                        f"{tuple(x.shape)}: {type(exc).__name__}: {common.one_line(exc)}"
                        ) from exc
    if not isinstance(y, torch.Tensor) or y.dim() != 2 or len(y) != len(x):
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise IntqError(f"model {loaded.label} must return (batch, classes) logits, got {got}")
    labels = None if evaluation is None else evaluation.y
    if labels is not None and labels.max().item() >= y.shape[1]:
        raise IntqError(f"the evaluation data has labels up to {labels.max().item()} but the "
                        f"model has only {y.shape[1]} classes")


def _keep_float(recipe: Recipe, model: nn.Module, names: list[str]):
    """(recipe with keep-float overrides for patterns, exact module names as leaf modules)."""
    modules = {name for name, _ in model.named_modules() if name}
    leaves = []
    for name in names:
        if name in modules:
            leaves.append(name)
        elif any(c in name for c in "*?[") and fnmatch.filter(modules, name):
            recipe = recipe.with_override(name, keep_float=True)
        else:
            raise IntqError(f"--keep-float {name}: no module of the model has this name; "
                            "names look like 'features.3' (see model.named_modules())")
    return recipe, leaves


def _calibrate(model: nn.Module, calib: Dataset, recipe: Recipe, leaves: list[str], args):
    start = time.perf_counter()
    try:
        if args.adaround:
            qgm = adaround(model, calib.x, recipe, settings=common.adaround_settings(args),
                           leaf_modules=leaves,
                           bias_correction=args.bias_correction,
                           progress=common.progress_enabled())
        else:
            qgm = quantize(model, calib.x, recipe, leaf_modules=leaves,
                           bias_correction=args.bias_correction,
                           progress=common.progress_enabled())
    except ValueError as exc:
        raise IntqError(f"calibration failed: {common.one_line(exc)}") from exc
    return qgm, time.perf_counter() - start


def _data_info(data: Dataset) -> dict:
    return {"data": data.name, "samples": len(data), "labelled": data.y is not None}


# -- the integer model: convert, export, evaluate in ONNX Runtime, time --------------------

def _integer_run(plan: _Plan, args, loaded: LoadedModel, qgm, calib: Dataset,
                 evaluation: Dataset | None) -> dict:
    qdq = args.onnx_format == "qdq"
    weight_type = "s8" if qdq or cpu_has_vnni() else "auto"
    with common.status("converting to an integer program and ONNX"):
        program = _convert(qgm, plan.input_shape)
        islands = float_islands(program)
        _check_exportable(islands)
        onnx_bytes = _export(program, weight_type, args.onnx_format)
        tflite = plan.output.suffix == ".tflite"
        model_bytes = _export_tflite(program) if tflite else onnx_bytes
    counts = collections.Counter(type(op).__name__ for op in program.ops)
    float_count = counts["FloatOp"] + counts["FloatSubgraph"]
    result = {
        "output": str(plan.output),
        "program": None if plan.program is None else str(plan.program),
        "simulated_only": False,
        "simulated_reason": None,
        "onnx_format": args.onnx_format,
        "onnx_weight_type": weight_type,
        "exact_on": EXACT_VNNI if weight_type == "s8" else EXACT_ANY_X86,
        "cpu_has_vnni": cpu_has_vnni(),
        "quantized_ops": len(program.ops) - float_count,
        "float_ops": float_count,
        "float_islands": [dataclasses.asdict(i) for i in islands],
        "op_counts": dict(counts.most_common()),
        "int8_size_bytes": len(model_bytes),
        "runtime": "LiteRT" if tflite else "ONNX Runtime",
    }
    with temporary_folder("intq-float-") as tmp:
        float_onnx = _float_onnx(loaded.model, calib.x[:1], tmp / "float.onnx")
        result["float_size_bytes"] = (float_onnx.stat().st_size if float_onnx
                                      else _float32_bytes(loaded.model))
        result["float_size_source"] = "onnx" if float_onnx else "float32 state dict"
        result["size_ratio"] = result["float_size_bytes"] / len(model_bytes)
        if evaluation is not None:
            result |= _compare(loaded.model, _ort_runner(model_bytes), evaluation)
        result |= _latency(float_onnx, model_bytes, args)
    common.write_output(plan.output, model_bytes)
    if plan.program is not None:
        save_program(program, plan.program)  # a full disk: one OutputError line
    return result


def _convert(qgm, input_shape: tuple[int, int, int]) -> IntProgram:
    try:
        return convert_to_program(qgm, input_shape)
    except ValueError as exc:
        raise IntqError(f"integer conversion failed: {common.one_line(exc)}") from exc


def _check_exportable(islands: list[FloatIsland]) -> None:
    """A float node that torch.onnx cannot export blocks the ONNX file: say which and why."""
    blocked = [i for i in islands if not i.exported]
    if blocked:
        first = blocked[0]
        more = f" (and {len(blocked) - 1} more)" if len(blocked) > 1 else ""
        raise IntqError(f"node {first.describe()}{more}; rewrite it with ops torch.onnx can "
                        "export, or run it outside the model")


def _export(program: IntProgram, weight_type: str, onnx_format: str) -> bytes:
    try:
        if onnx_format == "qdq":
            return export_onnx_qdq(program).SerializeToString()
        return export_onnx(program, weight_type=weight_type).SerializeToString()
    except ValueError as exc:
        raise IntqError(f"ONNX export failed: {common.one_line(exc)}") from exc


def _export_tflite(program: IntProgram) -> bytes:
    try:
        return export_tflite(program)
    except ValueError as exc:
        raise IntqError(f"LiteRT export failed: {common.one_line(exc)}") from exc


def _float_onnx(model: nn.Module, example: torch.Tensor, path: Path) -> Path | None:
    """Export the float model with torch.onnx (TorchScript exporter, opset 17); None (and a
    note) if it cannot be exported."""
    try:
        with (common.status("exporting the float model to ONNX"), torch.no_grad(),
              contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings()):
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes
            torch.onnx.export(model, (example,), str(path), dynamo=False,
                              opset_version=_FLOAT_ONNX_OPSET, input_names=["input"],
                              output_names=["logits"])
    except Exception as exc:
        common.note(f"warning: the float model does not export to ONNX "
                    f"({common.one_line(exc)}): no float latency; float size = float32 state")
        return None
    return path


def _float32_bytes(model: nn.Module) -> int:
    return sum(4 * t.numel() for t in model.state_dict().values() if t.is_floating_point())


def _ort_runner(model_bytes: bytes):
    from intq.runtime.litert import LiteRtSession, is_tflite

    runtime = LiteRtSession if is_tflite(model_bytes) else OrtSession
    return runtime(model_bytes, threads=torch.get_num_threads()).run


def _compare(float_model: nn.Module, candidate, evaluation: Dataset) -> dict:
    """Float logits (PyTorch) vs ``candidate`` logits: agreement, and accuracy with labels.
    ``candidate``: an nn.Module, or a numpy runner (the ONNX model)."""
    reference = evaluate_model(float_model, evaluation, progress=common.progress_enabled())
    if isinstance(candidate, nn.Module):
        logits = evaluate_model(candidate, evaluation, progress=common.progress_enabled())
    else:
        logits = common.onnx_logits(candidate, evaluation, 64, what="the integer model")
    return {"accuracy": _accuracy(reference, logits, evaluation.y),
            "agreement": common.agreement(reference, logits)}


def _accuracy(reference, logits, labels) -> dict | None:
    if labels is None:
        return None
    base, quantized = top1_accuracy(reference, labels), top1_accuracy(logits, labels)
    return {"float": base, "int8": quantized, "drop": base - quantized}


def _latency(float_onnx: Path | None, onnx_bytes: bytes, args) -> dict:
    models = [onnx_bytes] if float_onnx is None else [float_onnx, onnx_bytes]
    with common.status(f"measuring latency ({args.repeats} runs per model)"):
        stats = model_latency(models, threads=1, repeats=args.repeats, warmup=_LATENCY_WARMUP,
                            batch=1, seed=args.seed)
    latency = {"threads": 1, "batch": 1, "int8": stats[-1].as_dict(),
               "float": None if float_onnx is None else stats[0].as_dict()}
    ratio = None if float_onnx is None else speedup(stats[1], stats[0])
    return {"latency_ms": latency, "speedup": ratio}


# -- simulated only (no integer form) --------------------------------------------------------

def _simulated_run(plan: _Plan, model: nn.Module, qgm, evaluation: Dataset | None) -> dict:
    result = {
        "output": None,
        "program": None,
        "simulated_only": True,
        "simulated_reason": plan.simulated_reason,
        "float_size_bytes": None,
        "int8_size_bytes": None,
        "size_ratio": None,
        "quantized_ops": None,
        "float_ops": None,
        "float_islands": None,
        "latency_ms": None,
        "speedup": None,
    }
    if evaluation is not None:
        result |= _compare(model, qgm, evaluation)
    return result


# -- the human-readable report -------------------------------------------------------------

def _render(r: dict) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False, soft_wrap=True)
    kind = "simulated" if r["simulated_only"] else "int8"
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for header, justify in (("", "left"), ("float", "right"), (kind, "right"), ("", "left")):
        table.add_column(header, justify=justify)
    for row in _size_rows(r) + _latency_rows(r) + _quality_rows(r):
        table.add_row(*row)
    console.print("\n".join(_header_lines(r)), markup=False)
    if table.row_count:
        console.print(table)
    console.print("\n".join(_footer_lines(r)), markup=False)


def _header_lines(r: dict) -> list[str]:
    target = r["output"] or f"no file written: {r['simulated_reason']}"
    calib = r["calibration"]
    lines = [
        f"{r['model']} ({r['weights']} weights) -> {target}",
        f"recipe       {r['recipe']}"
        + (" + cross-layer equalization" if r["equalize"] else "")
        + (" + AdaRound" if r["adaround"] else "")
        + (" by block" if r["adaround_granularity"] == "block" else "")
        + (" with learned scales" if r["adaround_scales"] else "")
        + (" + bias correction" if r["bias_correction"] else ""),
        f"calibration  {calib['samples']} samples of {calib['data']} in "
        f"{r['calibration_seconds']:.1f} s",
    ]
    ev = r["evaluation"]
    if ev is None:
        lines.append("evaluation   none (give --eval DATA)")
    else:
        labels = "with labels" if ev["labelled"] else "no labels: agreement with float only"
        versus = ("PyTorch, simulated" if r["simulated_only"]
                  else f"integer model in {r['runtime']}")
        lines.append(f"evaluation   {ev['samples']} samples of {ev['data']}, {labels} "
                     f"({versus})")
    return lines + mixed_cli.header_lines(r)


def _size_rows(r: dict) -> list[tuple[str, ...]]:
    if r["int8_size_bytes"] is None:
        return []
    source = "" if r["float_size_source"] == "onnx" else " (float32 state)"
    return [("size", _mb(r["float_size_bytes"]), _mb(r["int8_size_bytes"]),
             _times(r["size_ratio"], "smaller", "larger") + source)]


def _latency_rows(r: dict) -> list[tuple[str, ...]]:
    lat = r["latency_ms"]
    if lat is None:
        return []
    float_ms = "-" if lat["float"] is None else _ms(lat["float"]["median_ms"])
    ratio = "" if r["speedup"] is None else _times(r["speedup"], "faster", "slower")
    return [("latency", float_ms, _ms(lat["int8"]["median_ms"]), ratio)]


def _quality_rows(r: dict) -> list[tuple[str, ...]]:
    rows = []
    acc = r.get("accuracy")
    if acc is not None:
        rows.append(("top-1 accuracy", f"{acc['float']:.2%}", f"{acc['int8']:.2%}",
                     f"{100 * (acc['int8'] - acc['float']):+.2f} points"))
    agree = r.get("agreement")
    if agree is not None:
        rows.append(("top-1 agreement", "", f"{agree['top1']:.2%}", "same top-1 class"))
        if agree["top5"] is not None:
            rows.append(("top-5 agreement", "", f"{agree['top5']:.2%}",
                         "float top-1 in the top-5"))
        rows.append(("logit SQNR", "", f"{agree['sqnr_db']:.1f} dB", ""))
        rows.append(("KL divergence", "", f"{agree['kl_divergence']:.4f}", "nats"))
    return rows


def _footer_lines(r: dict) -> list[str]:
    lines = []
    if r["latency_ms"] is not None:
        lat = r["latency_ms"]
        spreads = ", ".join(f"{k} {_ms(v['p10_ms'])[:-3]}-{_ms(v['p90_ms'])}"
                            for k, v in (("float", lat["float"]), ("int8", lat["int8"]))
                            if v is not None)
        runtime = ("ONNX Runtime" if r.get("runtime", "ONNX Runtime") == "ONNX Runtime"
                   else f"float in ONNX Runtime, int8 in {r['runtime']} (XNNPACK)")
        lines.append(f"latency      {runtime}, 1 thread, batch 1, median of "
                     f"{lat['int8']['repeats']} interleaved runs (p10-p90: {spreads})")
    if r["quantized_ops"] is not None:
        ops = ", ".join(f"{n} {name}" for name, n in r["op_counts"].items())
        lines.append(f"program      {r['quantized_ops']} integer ops ({ops}), "
                     f"{r['float_ops']} float ops")
        lines += _island_lines(r["float_islands"])
        vnni = "has" if r["cpu_has_vnni"] else "lacks"
        if r.get("runtime") == "LiteRT":
            lines.append("LiteRT       int8 .tflite, NHWC input: exact in LiteRT's reference "
                         "kernels; XNNPACK rounds in float (1 LSB per op; BENCHMARKS.md, LiteRT)")
        else:
            qdq = " (QDQ format)" if r["onnx_format"] == "qdq" else ""
            lines.append(f"ONNX         {r['onnx_weight_type']} weights{qdq}: exact on "
                         f"{r['exact_on']} (this CPU {vnni} VNNI)")
    if r["program"]:
        lines.append(f"IntProgram   {r['program']}")
    lines.append(f"done in {r['seconds']:.1f} s")
    return lines


def _island_lines(islands: list[dict], shown: int = 12) -> list[str]:
    """The float islands, one per line (the first `shown`)."""
    if not islands:
        return []
    lines = [f"float ops    {len(islands)} stay float in the model:"]
    lines += [f"  {FloatIsland(**i).describe()}" for i in islands[:shown]]
    if len(islands) > shown:
        lines.append(f"  ... and {len(islands) - shown} more (--json lists all)")
    return lines


def _times(ratio: float, better: str, worse: str) -> str:
    return f"{ratio:.2f}x {better}" if ratio >= 1 else f"{1 / ratio:.2f}x {worse}"


def _ms(ms: float) -> str:
    return f"{ms:.2f} ms" if ms >= 1 else f"{ms:.3f} ms"


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e5 else f"{size / 1e3:.1f} kB"
