"""Report tests run torch on one thread: the machine's 2 cores are shared, and oversubscribed
OpenMP threads make small convolutions ~10x slower."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
