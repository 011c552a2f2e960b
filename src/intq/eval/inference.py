"""Run a model over a dataset in mini-batches and collect its logits, with a progress bar."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from rich.console import Console
from rich.progress import Progress
from torch import nn

from intq.zoo.dataset import Dataset

__all__ = ["evaluate_model"]

Model = Callable[[torch.Tensor], torch.Tensor]


def evaluate_model(
    model: Model, data: Dataset, batch_size: int = 64, *, progress: bool = True
) -> torch.Tensor:
    """float32 ``(N, K)`` logits of ``model`` (an ``nn.Module`` in eval mode, or any callable
    from a float32 NCHW batch to logits) on every sample of ``data``, in order.

    With ``progress``, a bar is drawn on stderr if it is a terminal and there are several
    batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(model, nn.Module) and model.training:
        raise ValueError("the model is in training mode; call model.eval() before evaluating")
    outputs = []
    show = progress and len(data) > batch_size
    with torch.inference_mode(), _progress_bar(show, len(data), data.name) as advance:
        for x, _ in data.batches(batch_size):
            outputs.append(_checked_logits(model(x), len(x)))
            advance(len(x))
    logits = torch.cat(outputs)
    if not torch.isfinite(logits).all():
        bad = (~torch.isfinite(logits)).any(dim=1).nonzero()[0, 0].item()
        raise ValueError(f"the model produced NaN or Inf logits on {data.name} (sample {bad})")
    return logits


def _checked_logits(out: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != batch:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return (batch, classes) logits, got {got}")
    return out.detach().to(torch.float32)


@contextmanager
def _progress_bar(enabled: bool, total: int, name: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(count)``; draws a transient bar on stderr only if it is a terminal."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda count: None
        return
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"evaluating {name}", total=total)
        yield lambda count: progress.advance(task, count)
