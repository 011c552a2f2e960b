"""The QAT fine-tuning loop: SGD with momentum, cosine learning-rate decay, the schedule.

Fine-tunes a ``prepare_qat`` model from its float weights (PAPER.md 3): before every step
``apply_schedule(qgm, schedule, step)`` sets the quantization, BN-freeze and range-freeze
switches. The learning rate decays from ``lr`` to 0 along a cosine over all steps; batches
are drawn from a seeded shuffle, so a run is a function of (weights, data, settings), and a
run resumed from a checkpoint (``intq.qat.checkpoint``) continues exactly. In a
``torch.distributed`` run (see ``intq.qat.distributed``) every rank takes its slice of each
global batch of ``batch_size · world_size`` samples.

The loss is cross-entropy with labels, or, given a ``teacher`` (the float model), label-free
distillation: ``intq.qat.distill.distillation_loss`` between the teacher's logits and the
QAT model's on the same inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from intq.qat.checkpoint import restore_training_state, training_state
from intq.qat.distill import distillation_loss
from intq.qat.schedule import QATSchedule, apply_schedule

__all__ = ["OPTIMIZERS", "QATProgress", "train_qat"]

OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class QATProgress:
    """After one step: global step (1-based), epoch, running train loss and accuracy (top-1
    against the labels, or, when distilling, top-1 agreement with the teacher)."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    accuracy: float


@dataclass(frozen=True)
class _Loss:
    """How a step scores the QAT model's logits: labels, or a teacher at a temperature."""

    teacher: nn.Module | None
    temperature: float

    def __call__(self, logits: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor | None):
        """(loss, number of top-1 hits against the labels or the teacher)."""
        if self.teacher is None:
            return F.cross_entropy(logits, yb), int((logits.argmax(1) == yb).sum())
        with torch.no_grad():
            target = self.teacher(xb)
        hits = int((logits.argmax(1) == target.argmax(1)).sum())
        return distillation_loss(logits, target, self.temperature), hits


def train_qat(
    qgm: fx.GraphModule | nn.Module,
    x: torch.Tensor,
    y: torch.Tensor | None = None,
    *,
    teacher: nn.Module | None = None,
    temperature: float = 1.0,
    epochs: int = 1,
    lr: float = 0.01,
    batch_size: int = 64,
    max_steps: int | None = None,
    schedule: QATSchedule | None = None,
    seed: int = 0,
    on_step: Callable[[QATProgress], None] | None = None,
    resume: dict[str, torch.Tensor] | None = None,
    checkpoint: Callable[[dict[str, torch.Tensor]], None] | None = None,
    checkpoint_every: int | None = None,
    optimizer: str = "sgd",
) -> fx.GraphModule | nn.Module:
    """Fine-tune ``qgm`` (or its DDP wrapper) on ``x`` with cross-entropy on ``y``, or by
    distillation from ``teacher`` (eval mode; ``y`` unused); returns it in training mode.

    ``schedule`` defaults to ``QATSchedule.for_total_steps(total)``. ``resume``: a state from
    ``training_state`` to continue from. ``checkpoint(state)`` is called after every
    ``checkpoint_every``-th step with that step's ``training_state``. ``optimizer``: "sgd"
    (momentum 0.9, the paper's) or "adam" (steps of about ``lr`` whatever the gradient's
    scale: 4-bit fine-tuning from a PTQ model by distillation, whose gradients are small).
    """
    _check_inputs(x, y, teacher)
    rank, world = _rank_and_world()
    per_epoch = _steps_per_epoch(len(x), batch_size * world, world)
    total = per_epoch * epochs if max_steps is None else min(max_steps, per_epoch * epochs)
    schedule = QATSchedule.for_total_steps(total) if schedule is None else schedule
    target = qgm.module if hasattr(qgm, "module") else qgm
    optimizer = _make_optimizer(optimizer, qgm.parameters(), lr)
    start = 0 if resume is None else restore_training_state(resume, target, optimizer)
    loss_fn = _Loss(teacher, temperature)
    qgm.train()
    generator = torch.Generator().manual_seed(seed)
    step, loss_sum, hits, seen = 0, 0.0, 0, 0
    for epoch in range(1, epochs + 1):
        for xb, yb in _global_batches(x, y, batch_size * world, generator, rank, world):
            if step == total:
                return qgm
            step += 1
            if step <= start:  # done before the checkpoint: replay the batch order only
                continue
            apply_schedule(target, schedule, step - 1)
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / total))
            loss, step_hits = loss_fn(qgm(xb), xb, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(xb)
            hits, seen = hits + step_hits, seen + len(xb)
            if on_step is not None:
                on_step(QATProgress(step, total, epoch, loss_sum / seen, hits / seen))
            if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
                checkpoint(training_state(target, optimizer, step))
    return qgm


def _make_optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    """``OPTIMIZERS[name]``: SGD with momentum 0.9, or Adam (default betas)."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr)
    raise ValueError(f"train_qat: optimizer must be one of {', '.join(OPTIMIZERS)}, got {name!r}")


def _check_inputs(x: torch.Tensor, y: torch.Tensor | None, teacher: nn.Module | None) -> None:
    if len(x) == 0:
        raise ValueError("train_qat: no training inputs")
    if teacher is None and (y is None or len(y) != len(x)):
        got = "none" if y is None else len(y)
        raise ValueError(f"train_qat: need a label per input ({len(x)}), got {got}; or "
                         "give a teacher to distill from")


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
        yield x[idx], None if y is None else y[idx]


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1
