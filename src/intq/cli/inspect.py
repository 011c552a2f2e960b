"""``intq inspect``: per-quantizer sensitivity of a quantized model, as a table and a PNG chart."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from intq.cli import _common as common
from intq.errors import IntqError, UsageError
from intq.modelspec import load_model_spec, spec_label
from intq.observers.factory import OBSERVER_KINDS
from intq.ptq import quantize
from intq.recipes import DEFAULT_OBSERVER, DEFAULT_RECIPE, get_recipe, recipe_names
from intq.report.sensitivity import format_sensitivity, quantizer_sensitivity
from intq.report.sensitivity_plot import sensitivity_png
from intq.zoo.dataset import Dataset
from intq.zoo.registry import DEFAULT_MODEL, MODEL_ZOO

__all__ = ["add_parser", "run"]

_CALIB_SIZE, _EVAL_SIZE = 256, 64

_DESCRIPTION = f"""\
Which quantizers cost the most? Quantize MODEL with a recipe (one calibration), then for every
quantizer (each layer's weights, each activation) measure the logits with only that quantizer
on, and with only it off, against the float model: logit SQNR and top-1 agreement. Writes a
PNG bar chart and prints the table (--json: one JSON object).

MODEL and DATA as 'intq quantize' takes them. The measurement runs on --eval DATA (default:
the zoo model's evaluation data; for other models, the last third of the calibration data,
which calibration then does not see). It costs 2 forward passes per quantizer:
--eval-size N (default {_EVAL_SIZE}) sets its samples.
"""


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect", help="per-quantizer sensitivity (SQNR, agreement) as a table and a chart",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL", nargs="?", default=DEFAULT_MODEL,
                   help=f"zoo name, FILE.py:FACTORY or package.module:FACTORY "
                   f"(default: {DEFAULT_MODEL})")
    p.add_argument("--weights", type=Path, metavar="FILE", help="state dict (.safetensors, ...)")
    p.add_argument("--input-shape", type=common.parse_input_shape, metavar="C,H,W",
                   help="input shape of a model outside the zoo")
    p.add_argument("--calib", metavar="DATA", help=f"calibration data: {common.DATA_HELP}")
    p.add_argument("--calib-size", type=common.positive_int, default=_CALIB_SIZE, metavar="N",
                   help=f"calibration samples (default: {_CALIB_SIZE})")
    p.add_argument("--eval", metavar="DATA", help="data the sensitivity is measured on")
    p.add_argument("--eval-size", type=common.positive_int, default=_EVAL_SIZE, metavar="N",
                   help=f"samples the sensitivity is measured on (default: {_EVAL_SIZE})")
    common.add_normalize_argument(p)
    p.add_argument("--recipe", default=DEFAULT_RECIPE, metavar="NAME",
                   help=f"{', '.join(recipe_names())} (default: {DEFAULT_RECIPE})")
    p.add_argument("--w-bits", type=common.int_in_range(2, 16), metavar="N",
                   help="weight bits, 2..16 (default: the recipe's)")
    p.add_argument("--a-bits", type=common.int_in_range(2, 16), default=8, metavar="N",
                   help="activation bits, 2..16 (default: 8)")
    p.add_argument("--observer", choices=OBSERVER_KINDS, default=DEFAULT_OBSERVER,
                   help=f"activation range estimator (default: {DEFAULT_OBSERVER})")
    p.add_argument("--plot", type=Path, metavar="OUT.png",
                   help="bar chart to write (default: MODEL.sensitivity.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    with common.warnings_as_notes():
        try:
            recipe = get_recipe(args.recipe, w_bits=args.w_bits, a_bits=args.a_bits,
                                observer=args.observer)
        except ValueError as exc:
            raise UsageError(f"--recipe: {exc}") from None
        plot = _plot_path(args)
        calib, measure = _data(args)
        with common.status(f"loading {args.model}"):
            loaded = load_model_spec(args.model, weights=args.weights)
        with common.status("calibrating"):
            try:
                qgm = quantize(loaded.model, calib.x, recipe, progress=False)
            except ValueError as exc:
                raise IntqError(f"calibration failed: {common.one_line(exc)}") from exc
        with common.status(f"measuring sensitivity on {len(measure)} samples"):
            table = quantizer_sensitivity(qgm, measure.x)
        png = sensitivity_png(table, f"{loaded.label}, {recipe.name}, on {measure.name}")
    common.write_output(plot, png)
    result = {"model": loaded.label, "recipe": recipe.name, "calibration": calib.name,
              "calibration_samples": len(calib), "measured_on": measure.name,
              "plot": str(plot), **table.as_dict()}
    if args.json:
        common.print_json(result)
    else:
        print(format_sensitivity(table), end="")
        print(f"\nchart: {plot}")
    return 0


def _plot_path(args: argparse.Namespace) -> Path:
    inputs = [Path(p) for p in (args.weights, args.calib, args.eval) if p is not None]
    path = args.plot or Path(f"{spec_label(args.model)}.sensitivity.png")
    return common.check_output_path(path, suffix=".png", inputs=inputs)


def _data(args: argparse.Namespace) -> tuple[Dataset, Dataset]:
    """(calibration, measurement) data; a held-out third of the calibration data is measured
    on when there is no --eval and no zoo evaluation set."""
    zoo = MODEL_ZOO.get(args.model)
    shape = (zoo.input_shape if zoo is not None else args.input_shape
             or common.data_input_shape(args.calib) or common.data_input_shape(args.eval))
    if shape is None:
        raise UsageError(f"give --input-shape C,H,W for {args.model} (not a zoo model), or "
                         "--calib as a dataset or a .npy/.npz file")
    calib_spec = args.calib or (zoo.dataset if zoo is not None else
                                common.dataset_for_shape(shape))
    if calib_spec is None:
        raise UsageError("give --calib DATA: no zoo dataset has inputs of this shape")
    norm = common.normalization(args, zoo)
    eval_spec = args.eval or (zoo.dataset if zoo is not None else None)
    if eval_spec is not None:
        calib = common.load_dataset(calib_spec, shape, "calibration", args.calib_size,
                                    "calibration", norm)
        return calib, common.load_dataset(eval_spec, shape, "evaluation", args.eval_size,
                                          "evaluation", norm)
    data = common.load_dataset(calib_spec, shape, "calibration",
                               args.calib_size + args.eval_size, "calibration", norm)
    if len(data) < 2:
        raise IntqError(f"the calibration data {data.name} has {len(data)} sample; give at "
                        "least 2 (a third is held out for the measurement) or --eval DATA")
    held = max(1, min(args.eval_size, len(data) // 3))
    rest = Dataset(data.name, data.x[: len(data) - held])
    return rest, Dataset(f"{data.name} (held out)", data.x[len(data) - held:])
