"""Train every Fashion-MNIST zoo model with its shipped recipe and ship the weights.

What it measures: float top-1 accuracy on the 10k Fashion-MNIST test set (and on its first
2000 images, which the tests re-measure), parameter count and training wall time, for
models trained on the 60k training set by ``intq.zoo.registry.train_zoo_model`` (the code
path of ``intq train``). Writes the weights to ``src/intq/zoo/weights/<name>.safetensors``,
their metadata to ``src/intq/zoo/weights/zoo.json``, and the results to
``benchmarks/results/train_zoo.{json,md}``.

    .venv/bin/python benchmarks/train_zoo.py [--models NAME ...] [--threads N]

Several runs may work at once on different models: the JSON files are updated under a lock.
"""

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

import torch

from intq.zoo.registry import SUBSET_SIZE, WEIGHTS_DIR, list_models, save_weights, train_zoo_model

RESULTS = Path(__file__).parent / "results"
METADATA = WEIGHTS_DIR / "zoo.json"


def main() -> int:
    trainable = [m.name for m in list_models() if m.recipe is not None]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=trainable, choices=trainable)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per model")
    args = parser.parse_args()
    for name in args.models:
        record = _train(name, args.threads)
        print(json.dumps({name: record}), flush=True)
        with _locked(RESULTS / ".train_zoo.lock"):
            _update_json(METADATA, name, record)
            results = _update_json(RESULTS / "train_zoo.json", name, record)
            (RESULTS / "train_zoo.md").write_text(_markdown(results))
    return 0


def _train(name: str, threads: int) -> dict:
    result = train_zoo_model(name, threads=threads, progress=sys.stderr.isatty())
    path = save_weights(result.model, WEIGHTS_DIR / f"{name}.safetensors")
    recipe = result.recipe
    return {
        "test_accuracy": result.test_accuracy,
        "subset_size": SUBSET_SIZE,
        "subset_accuracy": result.subset_accuracy,
        "params": sum(p.numel() for p in result.model.parameters()),
        "weights_bytes": path.stat().st_size,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "epochs": recipe.epochs,
        "lr": recipe.lr,
        "seed": recipe.seed,
        "batch_size": recipe.batch_size,
        "weight_decay": recipe.weight_decay,
        "augment": recipe.augment,
        "train_seconds": round(result.seconds, 1),
        "threads": threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }


@contextlib.contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _update_json(path: Path, name: str, record: dict) -> dict:
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[name] = record
    data = dict(sorted(data.items()))
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
    return data


def _markdown(results: dict) -> str:
    lines = [
        "# Float accuracy of the Fashion-MNIST zoo (benchmarks/train_zoo.py)",
        "",
        "Trained on the 60k training images, measured on the 10k test images.",
        "",
        "| model | test top-1 | first 2000 | params | epochs | lr | train time | threads |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['test_accuracy']:.2%} | {r['subset_accuracy']:.2%} | "
            f"{r['params']:,} | {r['epochs']} | {r['lr']} | {r['train_seconds'] / 60:.1f} min | "
            f"{r['threads']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
