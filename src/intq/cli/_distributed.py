"""The ``torch.distributed`` process group of a command started by ``torchrun``.

``torchrun --nproc_per_node N -m intq.cli qat ...`` sets ``RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT`` in every process; the same command without torchrun runs
as one process. Only CPU (gloo) is used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from intq.errors import IntqError

__all__ = ["process_group"]


@contextlib.contextmanager
def process_group() -> Iterator[tuple[int, int]]:
    """Yield ``(rank, world_size)``; joins a gloo group for the block when torchrun started
    more than one process, ``(0, 1)`` otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        yield 0, 1
        return
    import torch.distributed as dist

    try:
        dist.init_process_group("gloo")
    except (RuntimeError, ValueError) as exc:
        raise IntqError(f"cannot join the torchrun process group: {exc}") from None
    try:
        yield dist.get_rank(), dist.get_world_size()
    finally:
        dist.destroy_process_group()
