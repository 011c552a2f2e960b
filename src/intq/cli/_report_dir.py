"""``intq quantize --report DIR``: the per-layer SQNR table, the quantizer sensitivity table and
chart (``intq.report``), and the mixed precision choice, as files in one folder."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from torch import fx

from intq.cli import _common as common
from intq.errors import IntqError, UsageError
from intq.mixed_precision import MixedPrecision
from intq.report import format_layer_report, layer_report
from intq.report.sensitivity import format_sensitivity, quantizer_sensitivity
from intq.report.sensitivity_plot import sensitivity_png
from intq.zoo.dataset import Dataset

__all__ = ["add_argument", "check", "contents", "write"]

_SAMPLES = 64


def add_argument(group) -> None:
    group.add_argument("--report", type=Path, metavar="DIR",
                       help="also write layers.md (per-layer SQNR), sensitivity.{md,json,png} "
                       f"(each quantizer alone on / alone off, on {_SAMPLES} evaluation "
                       "samples) and, with a budget, mixed_precision.json into DIR")


def check(args: argparse.Namespace) -> None:
    """DIR must be a folder or a new name in an existing folder."""
    folder = args.report
    if folder is None:
        return
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--report {folder}: not a directory")
    if not folder.exists() and not folder.parent.is_dir():
        raise IntqError(f"--report {folder}: its parent {folder.parent} does not exist")


def contents(args: argparse.Namespace, qgm: fx.GraphModule, calib: Dataset,
             evaluation: Dataset | None, mixed: MixedPrecision | None) -> dict[str, bytes]:
    """File name -> bytes, computed before anything is written."""
    if args.report is None:
        return {}
    data = (evaluation or calib).head(_SAMPLES)
    with common.status(f"measuring quantizer sensitivity on {len(data)} samples"):
        table = quantizer_sensitivity(qgm, data.x)
        layers = layer_report(qgm, data.x)
    where = data.name if evaluation is not None else f"{data.name} (calibration data)"
    files = {
        "layers.md": format_layer_report(layers).encode(),
        "sensitivity.md": format_sensitivity(table).encode(),
        "sensitivity.json": _json({"measured_on": where, **table.as_dict()}),
        "sensitivity.png": sensitivity_png(table, f"quantizer sensitivity on {where}"),
    }
    if mixed is not None:
        files["mixed_precision.json"] = _json({"recipe": mixed.recipe.name, **mixed.as_dict()})
    return files


def write(folder: Path | None, files: dict[str, bytes]) -> None:
    """Each file written whole (temp file + rename) into ``folder``, created if needed."""
    if folder is None:
        return
    try:
        folder.mkdir(exist_ok=True)
    except OSError as exc:
        raise IntqError(f"cannot create {folder}: {exc.strerror}") from None
    for name, data in files.items():
        common.write_output(folder / name, data)


def _json(obj) -> bytes:
    return json.dumps(_finite(obj), indent=1, allow_nan=False).encode()


def _finite(obj):
    """``obj`` with non-finite floats (an SQNR of a quantizer that changes nothing) as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
