"""One intra-op thread for the observer tests: on the shared 2-core machine, OpenMP threads
contending with other jobs make small tensor ops 10x slower."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
