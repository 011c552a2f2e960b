"""Helpers shared by the CLI commands: argument types, data and ONNX loading, output files,
JSON printing and warnings as one-line notes."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from intq.cli import _paths
from intq.errors import IntqError, UsageError, printable
from intq.eval import (
    logit_sqnr_db,
    mean_kl_divergence,
    top1_agreement,
    topk_agreement,
    topk_overlap,
)
from intq.outputs import write_atomic
from intq.progress import progress_bar
from intq.runtime.budget import control_flow_nodes, memory_exceeded
from intq.zoo.arrays import array_shape
from intq.zoo.data import DATASET_SHAPES, DATASETS, load_data
from intq.zoo.dataset import Dataset
from intq.zoo.normalization import NORMALIZATIONS, Normalization

__all__ = [
    "DATA_HELP",
    "adaround_settings",
    "add_adaround_settings_arguments",
    "add_equalize_argument",
    "add_weight_observer_argument",
    "agreement",
    "check_onnx_file",
    "check_output_path",
    "data_input_shape",
    "dataset_for_shape",
    "int_in_range",
    "load_dataset",
    "note",
    "onnx_input_shape",
    "onnx_logits",
    "one_line",
    "ort_error",
    "parse_input_shape",
    "positive_int",
    "print_json",
    "progress_enabled",
    "status",
    "warnings_as_notes",
    "write_output",
]

DATA_HELP = (
    f"{' | '.join(DATASETS)} | a folder of images (class sub-folders give labels) "
    "| a .npy (float32 NCHW) or .npz (x, y) file"
)
_INTQ_DIR = str(Path(__file__).resolve().parents[1])


def positive(kind: type):
    """argparse type: a finite number of type ``kind`` (int, float) that is > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return int_in_range(1, None)(text)


def int_in_range(low: int, high: int | None):
    """argparse type: an integer in ``[low, high]`` (no upper bound when ``high`` is None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """argparse type: ``C,H,W`` (also ``CxHxW``) with every size >= 1."""
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W with sizes >= 1, got {text!r}")
    return shape


def progress_enabled() -> bool:
    """Progress bars go to stderr, and only when it is a terminal."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def status(text: str) -> Iterator[None]:
    """A spinner with ``text`` on stderr while the block runs (only on a terminal)."""
    if not progress_enabled():
        yield
        return
    from rich.console import Console

    with Console(stderr=True).status(text):
        yield


def note(message: str) -> None:
    """One line on stderr, prefixed ``intq:``."""
    print(f"intq: {printable(message)}", file=sys.stderr)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type if the message is empty)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def dataset_for_shape(input_shape: tuple[int, ...]) -> str | None:
    """The zoo dataset whose samples have ``input_shape`` (C, H, W), if any."""
    return next((name for name, shape in DATASET_SHAPES.items() if shape == input_shape), None)


def data_input_shape(spec: str | None) -> tuple[int, int, int] | None:
    """The (C, H, W) a DATA spec fixes: a zoo dataset's shape or a 4-D array file's; None for
    image folders (resized to the model) and for anything unreadable (loading reports it)."""
    if spec is None:
        return None
    if spec in DATASETS:
        return DATASET_SHAPES[spec]
    path = Path(spec)
    try:
        if path.suffix not in (".npy", ".npz") or not path.is_file():
            return None
        shape = array_shape(path)  # the header only
    except (IntqError, KeyError, OSError):  # unreadable or malformed: loading reports why
        return None
    return tuple(int(d) for d in shape[1:]) if len(shape) == 4 else None


def add_equalize_argument(parser) -> None:
    """``--equalize / --no-equalize`` (alias ``--cle / --no-cle``): cross-layer equalization
    (None: the recipe's default)."""
    parser.add_argument(
        "--equalize", "--cle", action=argparse.BooleanOptionalAction, default=None,
        help="cross-layer equalization: rescale consecutive layers to equal per-channel weight "
        "ranges before quantizing (across a relu6 only within the peaks seen on the data); "
        "default: on for per-tensor weights with quantized activations")


def add_weight_observer_argument(group) -> None:
    """``--weight-ranges {minmax,mse}``: the weight quantizers' range estimator."""
    from intq.recipes import WEIGHT_OBSERVERS

    group.add_argument("--weight-ranges", choices=WEIGHT_OBSERVERS, default="minmax",
                       help="weight range per channel (or tensor): min/max, or the clipping "
                       "with the least squared error (better at 4 bits); default: minmax")


def add_adaround_settings_arguments(group) -> None:
    """``--adaround-iters N``, ``--adaround-images N``, ``--adaround-scales`` and
    ``--adaround-granularity`` (``AdaRoundSettings``)."""
    from intq.adaptive_rounding import AdaRoundSettings

    defaults = AdaRoundSettings()
    group.add_argument("--adaround-iters", type=positive_int, default=defaults.iterations,
                       metavar="N", help=f"AdaRound optimizer steps per layer at most (default: "
                       f"{defaults.iterations}; stops early when the rounding settles)")
    group.add_argument("--adaround-images", type=positive_int, default=defaults.images,
                       metavar="N", help="calibration samples AdaRound learns from (default: "
                       f"{defaults.images}, at most the calibration set)")
    group.add_argument("--adaround-scales", action="store_true",
                       help="AdaRound also learns each weight scale and a bias shift in the "
                       "same objective (AdaQuant-style; layer granularity)")
    group.add_argument("--adaround-granularity", choices=("layer", "block"), default="layer",
                       help="reconstruct each layer's output, or each block's (BRECQ: the "
                       "layers between two residual adds learn together); default: layer")


def adaround_settings(args: argparse.Namespace):
    """The ``AdaRoundSettings`` of ``add_adaround_settings_arguments``'s arguments."""
    from intq.adaptive_rounding import AdaRoundSettings

    if args.adaround_scales and args.adaround_granularity == "block":
        raise UsageError("--adaround-scales works with --adaround-granularity layer only")
    return AdaRoundSettings(iterations=args.adaround_iters, images=args.adaround_images,
                            learn_scale_and_bias=args.adaround_scales,
                            granularity=args.adaround_granularity)


def add_crops_argument(parser, data: str, count: str) -> None:
    """``--crops N``: random-resized crops of a folder of images (``intq.zoo.user_data``)."""
    parser.add_argument(
        "--crops", type=positive_int, metavar="N",
        help=f"take N random-resized crops (25-100%% of the area, aspect 3/4 to 4/3, flipped "
        f"at random, seeded) in turn from the {data} folder's images instead of one center "
        f"crop per image: many samples from a few photographs ({count} then caps the images)")


def add_normalize_argument(parser) -> None:
    """``--normalize NAME``: the pixel normalization of images (see ``normalization``)."""
    parser.add_argument(
        "--normalize", choices=sorted(NORMALIZATIONS), metavar="NAME",
        help="pixel normalization of images (natural-images, image folders): "
        f"{', '.join(sorted(NORMALIZATIONS))} (inception: (pixel-127)/128); default: the zoo "
        "model's own, else imagenet for RGB and fashion-mnist for grayscale")


def normalization(args: argparse.Namespace, zoo_entry) -> Normalization | None:
    """``--normalize`` if given, else the zoo entry's (``None``: the loaders' default)."""
    if getattr(args, "normalize", None):
        return NORMALIZATIONS[args.normalize]
    return None if zoo_entry is None else zoo_entry.normalization


def load_dataset(spec: str, input_shape: tuple[int, int, int], split: str, n: int | None,
                 role: str, normalization: Normalization | None = None,
                 crops: int | None = None) -> Dataset:
    """``load_data`` for ``role`` ('calibration', 'evaluation'); at least one sample."""
    data = load_data(spec, input_shape=tuple(input_shape), split=split, n=n,
                     normalization=normalization, crops=crops)
    if len(data) == 0:
        raise IntqError(f"the {role} data {data.name} is empty")
    return data


def check_output_path(path: Path, *, suffix: str, inputs: list[Path],
                      rewrites: Path | None = None) -> Path:
    """``path`` if it can be written (see ``_paths.check_output``): never one of ``inputs``
    or of the zoo's shipped files (but ``rewrites``), never a directory or device."""
    return _paths.check_output(path, suffix=suffix, inputs=inputs, rewrites=rewrites)


def write_output(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (``intq.outputs.write_atomic``): ``path`` is
    never partial; an error or Ctrl-C leaves no temporary file; mode 0666 minus the umask."""
    write_atomic(path, data)


def print_json(obj) -> None:
    """Print ``obj`` as one indented JSON document; non-finite floats become null."""
    print(json.dumps(_finite(obj), indent=2, allow_nan=False))


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


@contextlib.contextmanager
def warnings_as_notes() -> Iterator[None]:
    """Show intq's own warnings as ``intq: warning: ...`` lines (each once); silence the
    warnings of other libraries (torch.onnx deprecations and the like)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        finally:
            shown = set()
            for w in caught:
                text = one_line(w.message)
                if str(w.filename).startswith(_INTQ_DIR) and text not in shown:
                    shown.add(text)
                    note(f"warning: {text}")


def onnx_input_shape(path: Path) -> tuple[int | None, ...]:
    """The shape of the single graph input of an ONNX file (None for a dynamic dimension:
    a symbol, or a negative size such as -1); a size 0 is an IntqError."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in constants]
    if len(inputs) != 1:
        raise IntqError(f"{path}: the model has {len(inputs)} inputs; intq needs exactly one "
                        "(an image batch)")
    dims = inputs[0].type.tensor_type.shape.dim
    if any(d.HasField("dim_value") and d.dim_value == 0 for d in dims):
        raise IntqError(f"{path}: the input has a dimension of size 0, so no sample can run "
                        "through it; export the model with sizes >= 1")
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in dims)


def agreement(reference: torch.Tensor, logits: torch.Tensor) -> dict:
    """Agreement of ``logits`` with ``reference`` logits: top1, top5 (reference top-1 in the
    top 5), top5_overlap, sqnr_db, kl_divergence; top-5 entries are None below 5 classes."""
    top5 = reference.shape[1] >= 5
    return {
        "top1": top1_agreement(reference, logits),
        "top5": topk_agreement(reference, logits, 5) if top5 else None,
        "top5_overlap": topk_overlap(reference, logits, 5) if top5 else None,
        "sqnr_db": logit_sqnr_db(reference, logits),
        "kl_divergence": mean_kl_divergence(reference, logits),
    }


def check_onnx_file(path: Path) -> Path:
    """``path`` if it holds an ONNX model that passes ``onnx.checker`` and has no control
    flow (``runtime.budget.control_flow_nodes``); else one IntqError."""
    import onnx

    if not path.is_file():
        raise IntqError(f"ONNX model {path} does not exist")
    try:
        onnx.checker.check_model(str(path))
        nodes = control_flow_nodes(onnx.load(str(path), load_external_data=False))
    except Exception as exc:  # the checker raises several unrelated types
        raise IntqError(f"not a valid ONNX model: {path}: {one_line(exc)}") from None
    if nodes:
        raise IntqError(f"refusing {path}: it has {len(nodes)} control-flow node(s) (first: "
                        f"{nodes[0]}), whose work a file does not bound; intq runs "
                        "feed-forward models (no Loop, Scan or If)")
    return path


def ort_error(path: Path, exc: Exception) -> IntqError:
    """The one-line error for an ONNX Runtime failure to load or run ``path``."""
    return memory_exceeded(str(path), exc) or IntqError(
        f"not a valid ONNX model: {path}: {one_line(exc)}")


def onnx_logits(run: Callable[[np.ndarray], np.ndarray], data: Dataset, batch_size: int, *,
                fixed_batch: int | None = None, what: str = "the ONNX model") -> torch.Tensor:
    """float32 (N, K) logits of ``run`` (float32 NCHW batch -> logits) over ``data``, in
    order. A model with a fixed batch size gets batches of exactly that size (the last one
    zero-padded, the padding's outputs dropped)."""
    size = fixed_batch or batch_size
    outputs = []
    batches = list(data.batches(size))
    for x, _ in progress_bar(batches, f"running {what}", enabled=progress_enabled()):
        n = len(x)
        if fixed_batch is not None and n < fixed_batch:
            x = torch.cat([x, x.new_zeros((fixed_batch - n, *x.shape[1:]))])
        y = np.asarray(run(x.numpy()))
        if y.ndim != 2 or y.shape[0] != len(x):
            raise IntqError(f"{what} must return (batch, classes) logits, got shape {y.shape}")
        outputs.append(torch.from_numpy(y[:n].astype(np.float32)))
    logits = torch.cat(outputs)
    if not torch.isfinite(logits).all():
        raise IntqError(f"{what} produced NaN or Inf logits on {data.name}")
    return logits
