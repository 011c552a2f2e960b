"""Distributed QAT (``torchrun``, gloo on CPU): every rank keeps the same BN statistics and
activation ranges, equal to a single process training on the global batch.

    dist.init_process_group("gloo")                    # torchrun sets rank and world size
    qgm = prepare_qat(model, x[:2], recipe)            # identical on every rank
    ddp = make_distributed(qgm)                        # DDP averages the gradients
    train_qat(ddp, x, y, batch_size=per_rank_batch)    # each rank takes its slice

- BN: each ``QATConvBn2d`` averages its batch moments over the ranks with a differentiable
  all-reduce (equal per-rank batches), so ``μ_B, σ_B``, the moving statistics and the
  gradients through them are those of the global batch.
- Activation ranges: each EMA observer all-reduces the batch (min, max) before folding it
  in, so its range is the EMA of the global batch extremes on every rank.
- Weight ranges are the current weights', identical because DDP keeps parameters identical.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, fx
from torch.nn.parallel import DistributedDataParallel

from intq.graph.place import activation_quantizers
from intq.observers.ema import EMAObserver
from intq.qat.bn_fold import QATConvBn2d

__all__ = ["GlobalBatchEMAObserver", "make_distributed"]


class GlobalBatchEMAObserver(EMAObserver):
    """Per-tensor EMA of the (min, max) of the batch across all ranks (all-reduce MAX)."""

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        lo, hi = torch.aminmax(self._rows(x))
        self.update_extremes(lo.item(), hi.item())

    @torch.no_grad()
    def update_summary(self, batch_min: Tensor, batch_max: Tensor, sample: Tensor | None,
                       stride: int) -> None:
        if sample is not None:
            raise ValueError("GlobalBatchEMAObserver: an EMA takes no sample")
        self.update_extremes(batch_min.item(), batch_max.item())

    @torch.no_grad()
    def update_extremes(self, low: float, high: float, *, replace: bool = False) -> None:
        extremes = torch.tensor([-low, high], dtype=torch.float32)
        dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
        super().update_extremes(-extremes[0].item(), extremes[1].item(), replace=replace)


def make_distributed(qgm: fx.GraphModule) -> DistributedDataParallel:
    """Make ``qgm`` (from ``prepare_qat``, identical on every rank) keep BN statistics and
    activation ranges in sync across ranks, in place, and wrap it in DDP."""
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("make_distributed: call torch.distributed.init_process_group first "
                         "(torchrun sets the rank and world size)")
    unused_bias = False
    for module in qgm.modules():
        if isinstance(module, QATConvBn2d):
            module.sync_batch_stats = True
            unused_bias |= module.conv.bias is not None  # cancelled by the batch mean
    for name, quantizer in activation_quantizers(qgm):
        quantizer.observer = _global_observer(quantizer.observer, name)
    return DistributedDataParallel(qgm, forward_sync_buffers=False,
                                   find_unused_parameters=unused_bias)


def _global_observer(observer: EMAObserver, name: str) -> GlobalBatchEMAObserver:
    if type(observer) is not EMAObserver or observer.per_channel:
        raise ValueError(f"make_distributed: activation quantizer {name} needs a per-tensor EMA "
                         f"observer (prepare_qat's), got {observer}")
    synced = GlobalBatchEMAObserver(bits=observer.bits, symmetric=observer.symmetric,
                                    decay=observer.decay)
    synced.load_state_dict(observer.state_dict())
    return synced
