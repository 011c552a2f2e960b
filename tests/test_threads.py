"""single_intra_op_thread: one thread inside, the previous count restored after, even on error."""

import pytest
import torch

from intq.threads import single_intra_op_thread


def test_one_thread_inside_and_the_count_restored_after_an_error():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError, match="boom"), single_intra_op_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
