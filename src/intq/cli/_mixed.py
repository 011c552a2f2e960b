"""``intq quantize --target-agreement A / --max-size SIZE``: per-layer weight bits chosen to
meet a budget (``intq.mixed_precision``), as options and a call of the quantize command."""

from __future__ import annotations

import argparse
import time

from torch import nn

from intq.cli import _common as common
from intq.errors import IntqError, UsageError
from intq.mixed_precision import (
    HIGH_BITS,
    LOW_BITS,
    MixedPrecision,
    choose_mixed_precision,
    parse_size,
)
from intq.recipes import Recipe
from intq.runtime.onnxruntime import cpu_has_vnni
from intq.zoo.dataset import Dataset

__all__ = ["add_arguments", "check", "header_lines", "report_entry", "requested", "search"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The "mixed precision" option group."""
    g = parser.add_argument_group(
        "mixed precision",
        f"choose {LOW_BITS}- or {HIGH_BITS}-bit weights per layer (8-bit activations: what "
        "ONNX Runtime runs) to meet a budget; the last third of the calibration data is held "
        "out to measure agreement, and every point judged is exported and run in ONNX Runtime")
    g.add_argument("--target-agreement", type=_fraction, metavar="A",
                   help="top-1 agreement with the float model on the held-out calibration "
                   "data, in (0, 1]: the smallest model reaching it")
    g.add_argument("--max-size", type=_size, metavar="SIZE",
                   help="ONNX file size, bytes or with kB/MB (e.g. 3.5MB): the most accurate "
                   "model that fits")


def requested(args: argparse.Namespace) -> bool:
    return args.target_agreement is not None or args.max_size is not None


def check(args: argparse.Namespace, no_integer_form: str | None) -> None:
    """Usage errors of a mixed precision run, before any slow work."""
    if not requested(args):
        return
    flag = "--target-agreement" if args.target_agreement is not None else "--max-size"
    if args.w_bits is not None:
        raise UsageError(f"{flag} chooses the weight bits per layer; drop --w-bits")
    if args.a_bits != 8:
        raise UsageError(f"{flag}: activations stay 8-bit (the only width ONNX Runtime runs); "
                         "drop --a-bits")
    if no_integer_form is not None:
        raise UsageError(f"{flag} measures the exported model, but {no_integer_form}")


def search(args: argparse.Namespace, model: nn.Module, calib: Dataset, recipe: Recipe):
    """(calibrated graph of the chosen configuration, seconds, MixedPrecision)."""
    if len(calib) < 3:
        raise IntqError(f"{calib.name} has {len(calib)} calibration samples; mixed precision "
                        "needs at least 3 (a third is held out to measure agreement)")
    held = len(calib) // 3
    start = time.perf_counter()
    mixed = choose_mixed_precision(
        model, calib.x[: len(calib) - held], calib.x[len(calib) - held:], recipe,
        target_agreement=args.target_agreement, max_size=args.max_size,
        weight_type="s8" if cpu_has_vnni() else "auto",
        progress=common.note if common.progress_enabled() else None)
    return mixed.qgm, time.perf_counter() - start, mixed


def header_lines(report: dict) -> list[str]:
    """The human-readable lines of the ``mixed_precision`` entry of a quantize report."""
    mixed = report.get("mixed_precision")
    if mixed is None:
        return []
    chosen, bits = mixed["chosen"], mixed["bits"]
    low = sum(b == LOW_BITS for b in bits.values())
    return [f"mixed        {low} of {len(bits)} layers at {LOW_BITS}-bit weights, the rest at "
            f"{HIGH_BITS}: {chosen['size_bytes'] / 1e6:.3f} MB, top-1 agreement "
            f"{chosen['agreement']:.3f} on {mixed['holdout_samples']} held-out calibration "
            f"samples ({len(mixed['measured'])} points measured)"]


def report_entry(mixed: MixedPrecision | None, calib: Dataset) -> dict:
    """Report entries of a mixed run: the calibration part of the data, and the choice."""
    if mixed is None:
        return {}
    return {"calibration": {"data": calib.name, "samples": len(calib) - mixed.holdout_samples},
            "mixed_precision": mixed.as_dict()}


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text!r}")
    return value


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
