"""Train and evaluate the zoo's small classifiers: seeded SGD with a one-cycle schedule.

Optimizer: SGD, Nesterov momentum 0.9, weight decay on conv/linear weights only, learning
rate following ``OneCycleLR`` (from ``lr / 25`` up to ``lr`` over the first 20% of steps,
then cosine decay to ``lr / 2.5e5``). Augmentation (optional): random shift by up to 2 pixels
(a crop of the border-replicated image) and horizontal flip, drawn per image from the same
seeded generator as the shuffling, so a run is a pure function of (initial weights, data,
hyper-parameters, seed) on a given machine and thread count. Training runs in channels-last
memory format (about 1.7x faster on CPU for these small convs); the model is returned in
the default format.
"""

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from intq.zoo.dataset import Dataset

__all__ = ["TrainRecipe", "augment_batch", "evaluate_accuracy", "train_classifier"]


@dataclass(frozen=True)
class TrainRecipe:
    """The hyper-parameters a zoo model's shipped weights were trained with."""

    epochs: int
    lr: float
    seed: int = 0
    batch_size: int = 128
    weight_decay: float = 5e-4
    augment: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be >= 1, got {self}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Shift each image by a random (dy, dx) in ``[-pad, pad]`` (a crop of the image padded
    by replicating its border) and mirror it left-right with probability 1/2."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1, 1), generator=generator)
    rows = (torch.arange(h).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w).view(1, 1, w) + dx).expand(n, h, w)
    flip = torch.rand(n, 1, 1, generator=generator) < 0.5
    cols = torch.where(flip, cols.flip(-1), cols)
    flat = (rows * (w + 2 * pad) + cols).view(n, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, flat).view_as(x)


def train_classifier(
    model: nn.Module,
    train: Dataset,
    *,
    epochs: int,
    lr: float,
    seed: int,
    augment: bool = True,
    batch_size: int = 128,
    weight_decay: float = 5e-4,
    progress: bool = True,
    threads: int | None = None,
) -> nn.Module:
    """Train ``model`` in place on the labelled ``train`` set with cross-entropy; return it in
    eval mode. ``threads`` sets torch's intra-op threads for the run (``None``: unchanged)."""
    if train.y is None:
        raise ValueError(f"dataset {train.name!r} has no labels to train on")
    recipe = TrainRecipe(epochs, lr, seed, batch_size, weight_decay, augment)
    with _num_threads(threads):
        torch.manual_seed(seed)
        model.train().to(memory_format=torch.channels_last)
        _fit(model, train, recipe, progress)
        model.to(memory_format=torch.contiguous_format)
    return model.eval()


def evaluate_accuracy(model: nn.Module, data: Dataset, batch_size: int = 512) -> float:
    """Top-1 accuracy (fraction of ``argmax(logits) == label``) of ``model`` in eval mode."""
    if data.y is None or len(data) == 0:
        raise ValueError(f"dataset {data.name!r} needs labels and at least one sample")
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in data.batches(batch_size):
            correct += int((model(x).argmax(1) == y).sum())
    model.train(was_training)
    return correct / len(data)


def _fit(model: nn.Module, train: Dataset, recipe: TrainRecipe, progress: bool) -> None:
    generator = torch.Generator().manual_seed(recipe.seed)
    steps = -(-len(train) // recipe.batch_size)
    optimizer = torch.optim.SGD(
        _param_groups(model, recipe.weight_decay), lr=recipe.lr, momentum=0.9, nesterov=True
    )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, recipe.lr, total_steps=recipe.epochs * steps, pct_start=0.2
    )
    with _progress_bar(progress, recipe.epochs * steps) as advance:
        for epoch in range(1, recipe.epochs + 1):
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in _shuffled_batches(train, recipe, generator):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                seen += len(y)
                advance(epoch, recipe.epochs, loss_sum / seen, correct / seen)


def _shuffled_batches(
    train: Dataset, recipe: TrainRecipe, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    order = torch.randperm(len(train), generator=generator)
    for i in range(0, len(train), recipe.batch_size):
        idx = order[i : i + recipe.batch_size]
        x = train.x[idx]
        if recipe.augment:
            x = augment_batch(x, generator)
        yield x.contiguous(memory_format=torch.channels_last), train.y[idx]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv/linear weights (dim > 1), none on biases and BN parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() > 1]
    plain = [p for p in params if p.dim() <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


@contextlib.contextmanager
def _num_threads(threads: int | None):
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int):
    """Yield ``advance(epoch, epochs, loss, accuracy)``; a rich bar on stderr if enabled."""
    if not enabled:
        yield lambda *_: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task("training", total=total)

        def advance(epoch: int, epochs: int, loss: float, accuracy: float) -> None:
            text = f"epoch {epoch}/{epochs} loss {loss:.4f} train acc {accuracy:.2%}"
            bar.update(task, advance=1, description=text)

        yield advance
