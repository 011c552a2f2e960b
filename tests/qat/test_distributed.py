"""Two gloo processes train the same tiny QAT model: ranges and BN statistics stay equal
across ranks and match one process training on the same global batches."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from intq.graph.place import activation_quantizers
from intq.qat import QATConvBn2d, QATSchedule, make_distributed, prepare_qat, train_qat

WORLD, PER_RANK, STEPS = 2, 8, 4
SCHEDULE = QATSchedule(bn_freeze_step=3)


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, bias=False), nn.BatchNorm2d(6), nn.ReLU6(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(WORLD * PER_RANK * STEPS, 1, 10, 10, generator=g), torch.randint(
        0, 3, (WORLD * PER_RANK * STEPS,), generator=g)


def state(qgm) -> dict[str, torch.Tensor]:
    """Activation ranges, BN moving statistics and weights after training."""
    out = {f"range.{name}": torch.stack([q.observer.min_val, q.observer.max_val]).reshape(-1)
           for name, q in activation_quantizers(qgm)}
    for name, m in qgm.named_modules():
        if isinstance(m, QATConvBn2d):
            out[f"mean.{name}"], out[f"var.{name}"] = m.bn.running_mean, m.bn.running_var
            out[f"weight.{name}"] = m.conv.weight.detach()
    return {k: v.detach().clone().double() for k, v in out.items()}


def _worker(rank: int, init_file: str, results) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    try:
        x, y = data()
        qgm = prepare_qat(tiny_net(), x[:2])
        ddp = make_distributed(qgm)
        train_qat(ddp, x, y, lr=0.1, batch_size=PER_RANK, schedule=SCHEDULE)
        results[rank] = state(qgm)
    finally:
        dist.destroy_process_group()


def test_two_ranks_agree_with_each_other_and_with_one_process(tmp_path):
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(str(tmp_path / "init"), results), nprocs=WORLD, join=True)
    x, y = data()
    single = prepare_qat(tiny_net(), x[:2])
    train_qat(single, x, y, lr=0.1, batch_size=WORLD * PER_RANK, schedule=SCHEDULE)
    expected = state(single)
    rank0, rank1 = results[0], results[1]
    assert set(rank0) == set(expected) and len(expected) == 10  # the classifier has no range
    for key, value in expected.items():
        if key.startswith(("range", "mean", "var")):
            assert torch.equal(rank0[key], rank1[key]), key
        torch.testing.assert_close(rank0[key], rank1[key], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(rank0[key], value, rtol=1e-4, atol=1e-5)
