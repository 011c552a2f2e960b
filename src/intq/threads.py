"""Intra-op threads for work on small tensors.

PyTorch splits an op across its intra-op threads once a tensor passes a grain size (2,048
elements for ops such as floor and round, 32,768 for most others). On tensors a little above
that, and on a machine whose cores are busy, waking the other threads costs more than the
split saves: on a 2-core machine the observers' updates on sampled activations ran 1.5x slower
with two threads than with one at a load average of 2, and 30x slower at 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["single_intra_op_thread"]


@contextmanager
def single_intra_op_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread (process-wide), restoring the count after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
