"""``intq train``: train a Fashion-MNIST zoo model and write its weights as safetensors."""

import argparse
import json
import sys
from pathlib import Path

from intq.cli import _common as common
from intq.errors import IntqError
from intq.zoo import load_fashion_mnist, save_weights, train_zoo_model
from intq.zoo.registry import WEIGHTS_DIR

__all__ = ["add_parser", "run"]


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a Fashion-MNIST zoo model",
        description="Train a Fashion-MNIST zoo model from scratch with its shipped recipe "
        "(options override it), write the weights as safetensors and print the test "
        "accuracy. EfficientNet-Lite0 is an ImageNet model and is not trainable here.",
    )
    parser.add_argument("model", metavar="MODEL", help="zoo model name (see 'intq zoo')")
    parser.add_argument("--epochs", type=common.positive(int),
                        help="epochs (default: the recipe's)")
    parser.add_argument("--seed", type=common.int_in_range(0, 2**64 - 1),
                        help="random seed (default: the recipe's)")
    parser.add_argument("--lr", type=common.positive(float), help="peak learning rate")
    parser.add_argument("--threads", type=common.positive(int), help="torch CPU threads")
    parser.add_argument(
        "-o", "--output", type=Path, help="weights file (default: ./MODEL.safetensors)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    # Test-only: train and test on the first N images of each split, for a quick run.
    parser.add_argument("--subset", type=common.positive(int), help=argparse.SUPPRESS)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    output = common.check_output_path(
        args.output or Path(f"{args.model}.safetensors"), suffix=".safetensors", inputs=[],
        rewrites=WEIGHTS_DIR / f"{args.model}.safetensors")
    train_data = test_data = None
    if args.subset is not None:
        train_data = load_fashion_mnist("train").head(args.subset)
        test_data = load_fashion_mnist("test").head(args.subset)
    result = train_zoo_model(
        args.model,
        epochs=args.epochs,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        progress=sys.stderr.isatty() and not args.json,
        train_data=train_data,
        test_data=test_data,
    )
    _check_finite(result.model)
    save_weights(result.model, output)
    summary = {
        "model": args.model,
        "weights": str(output),
        "test_accuracy": result.test_accuracy,
        "test_images": result.test_images,
        "epochs": result.recipe.epochs,
        "lr": result.recipe.lr,
        "seed": result.recipe.seed,
        "train_seconds": round(result.seconds, 1),
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{args.model}: test accuracy {result.test_accuracy:.2%} on "
            f"{result.test_images:,} Fashion-MNIST test images after {result.recipe.epochs} "
            f"epochs; weights written to {output}"
        )
    return 0


def _check_finite(model) -> None:
    """Training that diverged (NaN or Inf weights) fails; nothing is written."""
    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not t.isfinite().all()]
    if bad:
        raise IntqError(f"training diverged: {len(bad)} weight tensor(s) hold NaN or Inf "
                        f"(first: {bad[0]}); nothing written; lower --lr")
