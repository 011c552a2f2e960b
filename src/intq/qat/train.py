"""The QAT fine-tuning loop: SGD with momentum, cosine learning-rate decay, the schedule.

Fine-tunes a ``prepare_qat`` model from its float weights (PAPER.md 3): before every step
``apply_schedule(qgm, schedule, step)`` sets the quantization, BN-freeze and range-freeze
switches. The learning rate decays from ``lr`` to 0 along a cosine over all steps; batches
are drawn from a seeded shuffle, so a run is a function of (weights, data, settings). In a
``torch.distributed`` run (see ``intq.qat.distributed``) every rank takes its slice of each
global batch of ``batch_size · world_size`` samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.qat.schedule import QATSchedule, apply_schedule

__all__ = ["QATProgress", "train_qat"]


@dataclass(frozen=True)
class QATProgress:
    """After one step: global step (1-based), epoch, running train loss and accuracy."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    accuracy: float


def train_qat(
    qgm: fx.GraphModule | nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    epochs: int = 1,
    lr: float = 0.01,
    batch_size: int = 64,
    max_steps: int | None = None,
    schedule: QATSchedule | None = None,
    seed: int = 0,
    on_step: Callable[[QATProgress], None] | None = None,
) -> fx.GraphModule | nn.Module:
    """Fine-tune ``qgm`` (or its DDP wrapper) on ``(x, y)`` with cross-entropy; returns it in
    training mode. ``schedule`` defaults to ``QATSchedule.for_total_steps(total)``."""
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"train_qat: need as many labels as inputs (>0), got {len(x)}/{len(y)}")
    rank, world = _rank_and_world()
    per_epoch = _steps_per_epoch(len(x), batch_size * world, world)
    total = per_epoch * epochs if max_steps is None else min(max_steps, per_epoch * epochs)
    schedule = QATSchedule.for_total_steps(total) if schedule is None else schedule
    target = qgm.module if hasattr(qgm, "module") else qgm
    optimizer = torch.optim.SGD(qgm.parameters(), lr=lr, momentum=0.9)
    qgm.train()
    generator = torch.Generator().manual_seed(seed)
    step, loss_sum, correct, seen = 0, 0.0, 0, 0
    for epoch in range(1, epochs + 1):
        for xb, yb in _global_batches(x, y, batch_size * world, generator, rank, world):
            if step == total:
                return qgm
            apply_schedule(target, schedule, step)
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            logits = qgm(xb)
            loss = F.cross_entropy(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += float(loss.detach()) * len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            seen += len(yb)
            if on_step is not None:
                on_step(QATProgress(step, total, epoch, loss_sum / seen, correct / seen))
    return qgm


def _steps_per_epoch(n: int, global_batch: int, world: int) -> int:
    """Batches per epoch; with several ranks only full global batches (equal shares)."""
    steps = n // global_batch if world > 1 else -(-n // global_batch)
    if steps == 0:
        raise ValueError(f"train_qat: {n} samples make no global batch of {global_batch}")
    return steps


def _global_batches(x, y, global_batch: int, generator, rank: int, world: int) -> Iterator:
    order = torch.randperm(len(x), generator=generator)
    for i in range(0, _steps_per_epoch(len(x), global_batch, world) * global_batch, global_batch):
        idx = order[i : i + global_batch].chunk(world)[rank]
        yield x[idx], y[idx]


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
