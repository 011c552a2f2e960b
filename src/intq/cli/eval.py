"""``intq eval``: run a float zoo model or an ONNX model on a dataset and report top-1
accuracy or confidence; an ONNX model can also be compared with a float reference model."""

import argparse
import json
from pathlib import Path

import torch
from torch import nn

from intq.cli import _common as common
from intq.errors import IntqError, UsageError
from intq.eval import evaluate_model, mean_max_softmax, top1_accuracy, top1_histogram
from intq.modelspec import load_model_spec
from intq.zoo.data import load_data
from intq.zoo.dataset import Dataset
from intq.zoo.registry import MODEL_ZOO, ZooModel, get_zoo_model, load_model, load_weights

__all__ = ["RUNTIMES", "add_parser", "run", "summarize_predictions"]

RUNTIMES = ("onnxruntime", "openvino")
_RUNTIME_NAMES = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO, f32 precision"}

_SHOWN_CLASSES = 5


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a float zoo model or an ONNX model on a dataset",
        description="Run a float zoo model or an ONNX model (in ONNX Runtime) over a dataset "
        "and print its top-1 accuracy (labelled data) or its confidence (mean max-softmax and "
        "the histogram of its top-1 classes, for data without labels such as natural-images). "
        "For an ONNX model, --reference REF also runs a float model on the same data and "
        "reports how closely the ONNX model follows it: top-1 agreement, top-5 agreement and "
        "overlap, logit SQNR and KL divergence.",
    )
    parser.add_argument(
        "model", metavar="MODEL", help="zoo model name (see 'intq zoo') or an ONNX file"
    )
    parser.add_argument(
        "--data",
        metavar="DATA",
        help=f"{common.DATA_HELP}; default: the model's (or the reference's) dataset "
        "(its evaluation split)",
    )
    parser.add_argument(
        "--n", type=common.positive_int, metavar="N", help="evaluate the first N samples"
    )
    common.add_normalize_argument(parser)
    parser.add_argument(
        "--reference",
        metavar="REF",
        help="ONNX MODEL only: float model to compare with: zoo name, FILE.py:FACTORY or "
        "package.module:FACTORY",
    )
    parser.add_argument(
        "--weights",
        type=Path,
        metavar="FILE",
        help="state dict of the float model (zoo MODEL: .safetensors; --reference: "
        ".safetensors or torch.save'd tensors)",
    )
    parser.add_argument(
        "--batch-size", type=common.positive_int, default=64, metavar="B", help="default: 64"
    )
    parser.add_argument(
        "--runtime", choices=RUNTIMES, default="onnxruntime",
        help="ONNX MODEL only: onnxruntime (default) or openvino (the 'openvino' extra; "
        "f32 inference precision), e.g. for a QDQ model from 'intq quantize --onnx-format qdq'",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.model.endswith(".onnx"):
        return _run_onnx(args)
    if args.reference is not None:
        raise UsageError("--reference compares an ONNX model with a float model; give "
                         "MODEL.onnx")
    if args.runtime != "onnxruntime":
        raise UsageError("--runtime applies to an ONNX MODEL; a zoo model runs in PyTorch")
    entry = get_zoo_model(args.model)
    data = load_data(args.data or entry.dataset, input_shape=entry.input_shape,
                     split="evaluation", n=args.n,
                     normalization=common.normalization(args, entry))
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


def _run_onnx(args: argparse.Namespace) -> int:
    path = common.check_onnx_file(Path(args.model))
    if args.weights is not None and args.reference is None:
        raise UsageError("--weights belongs to the float model of --reference; give --reference")
    shape = common.onnx_input_shape(path)
    if len(shape) != 4 or None in shape[1:]:
        raise IntqError(f"{path}: input shape {_dims(shape)} is not an image batch (N, C, H, W) "
                        "with fixed C, H, W")
    reference = MODEL_ZOO.get(args.reference)
    if reference is not None and reference.input_shape != shape[1:]:
        raise IntqError(f"reference {reference.name} takes {_dims(reference.input_shape)} "
                        f"inputs but the ONNX model takes {_dims(shape[1:])}")
    data = load_data(_onnx_data_spec(args, shape[1:]), input_shape=shape[1:],
                     split="evaluation", n=args.n,
                     normalization=common.normalization(args, reference))
    run_model = _openvino_run(path) if args.runtime == "openvino" else _ort_run(path)
    logits = common.onnx_logits(run_model, data, args.batch_size, fixed_batch=shape[0],
                                what=str(path))
    summary = {
        "model": str(path),
        "kind": "onnx",
        "runtime": args.runtime,
        "data": data.name,
        **summarize_predictions(logits, data.y),
        "reference": None if args.reference is None else _reference(args, data, logits),
    }
    if args.json:
        common.print_json(summary)
    else:
        print(_format_onnx(summary))
    return 0


def _onnx_data_spec(args: argparse.Namespace, input_shape: tuple[int, ...]) -> str:
    if args.data is not None:
        return args.data
    entry = get_zoo_model(args.reference) if args.reference in MODEL_ZOO else None
    spec = entry.dataset if entry else common.dataset_for_shape(tuple(input_shape))
    if spec is None:
        raise UsageError(f"give --data DATA: no zoo dataset has {_dims(input_shape)} inputs")
    common.note(f"evaluating on {spec}; give --data DATA to use other data")
    return spec


def _ort_run(path: Path):
    from intq.runtime.onnxruntime import OrtSession

    try:
        session = OrtSession(path, threads=torch.get_num_threads())
    except Exception as exc:  # onnxruntime's load errors have their own types
        raise common.ort_error(path, exc) from None
    if len(session.outputs) != 1:
        raise IntqError(f"{path} has outputs {session.outputs}; intq eval needs one (logits)")

    def run(x):
        try:
            return session.run(x)
        except Exception as exc:
            raise IntqError(f"ONNX Runtime failed on {path}: {common.one_line(exc)}") from None

    return run


def _openvino_run(path: Path):
    from intq.runtime.openvino import OpenVinoSession

    try:
        session = OpenVinoSession(path, threads=torch.get_num_threads())
    except ImportError as exc:
        raise IntqError(str(exc)) from None
    except Exception as exc:  # OpenVINO's read and compile errors are RuntimeErrors
        raise IntqError(f"OpenVINO cannot load {path}: {common.one_line(exc)}") from None
    if len(session.outputs) != 1:
        raise IntqError(f"{path} has outputs {session.outputs}; intq eval needs one (logits)")

    def run(x):
        try:
            return session.run(x)
        except Exception as exc:
            raise IntqError(f"OpenVINO failed on {path}: {common.one_line(exc)}") from None

    return run


def _reference(args: argparse.Namespace, data: Dataset, logits: torch.Tensor) -> dict:
    loaded = load_model_spec(args.reference, weights=args.weights)
    try:
        reference = evaluate_model(loaded.model, data, args.batch_size)
    except (ValueError, RuntimeError) as exc:
        raise IntqError(f"reference {loaded.label} on {data.name}: {common.one_line(exc)}"
                        ) from None
    if reference.shape != logits.shape:
        raise IntqError(f"reference {loaded.label} gives {tuple(reference.shape)} logits, the "
                        f"ONNX model {tuple(logits.shape)}")
    accuracy = None if data.y is None else top1_accuracy(reference, data.y)
    return {
        "model": loaded.label,
        "weights": loaded.weights,
        "top1_accuracy": accuracy,
        "agreement": common.agreement(reference, logits),
    }


def _format_onnx(s: dict) -> str:
    labels = "with labels" if s["labelled"] else "without labels: confidence only"
    lines = [
        f"model             {s['model']} ({_RUNTIME_NAMES[s['runtime']]})",
        f"data              {s['data']}, {s['samples']} samples {labels}",
    ]
    if s["labelled"]:
        lines.append(f"top-1 accuracy    {s['top1_accuracy']:.2%} ({s['correct']}/{s['samples']})")
    lines.append(f"mean max-softmax  {s['mean_max_softmax']:.4f}")
    ref = s["reference"]
    if ref is not None:
        lines.append(f"reference         {ref['model']} ({ref['weights']} weights)")
        if ref["top1_accuracy"] is not None:
            lines.append(f"  top-1 accuracy  {ref['top1_accuracy']:.2%}")
        a = ref["agreement"]
        lines.append(f"  top-1 agreement {a['top1']:.2%}")
        if a["top5"] is not None:
            lines.append(f"  top-5 agreement {a['top5']:.2%} (overlap {a['top5_overlap']:.2%})")
        lines.append(f"  logit SQNR      {a['sqnr_db']:.1f} dB")
        lines.append(f"  KL divergence   {a['kl_divergence']:.4f} nats")
    return "\n".join(lines)


def _dims(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)
