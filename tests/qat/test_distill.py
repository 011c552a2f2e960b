"""Label-free distillation: the loss is the KL divergence intq reports, and QAT trained on it
brings the quantized model closer to the float one on held-out inputs."""

import pytest
import torch
from torch import nn

from intq.eval import mean_kl_divergence
from intq.qat import convert_qat, distillation_loss, prepare_qat, train_qat

from .nets import trained_looking_net


def test_loss_at_temperature_one_is_the_reported_mean_kl():
    g = torch.Generator().manual_seed(0)
    teacher, student = torch.randn(6, 10, generator=g), torch.randn(6, 10, generator=g)
    loss = distillation_loss(student, teacher)
    assert loss.item() == pytest.approx(mean_kl_divergence(teacher, student), rel=1e-5)
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)


def test_loss_scales_by_temperature_squared_and_leaves_the_teacher_alone():
    g = torch.Generator().manual_seed(1)
    teacher = torch.randn(4, 5, generator=g, requires_grad=True)
    student = torch.randn(4, 5, generator=g, requires_grad=True)
    loss = distillation_loss(student, teacher, temperature=3.0)
    expected = 9.0 * mean_kl_divergence(teacher.detach() / 3, student.detach() / 3)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert teacher.grad is None and student.grad.abs().sum() > 0


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_temperature_must_be_positive(bad):
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), bad)


def _heldout_kl(teacher: nn.Module, lr: float, x: torch.Tensor, held: torch.Tensor) -> float:
    qgm = prepare_qat(teacher, x[:2], "sym-per-channel-4")
    train_qat(qgm, x, teacher=teacher, epochs=6, lr=lr, batch_size=32, seed=0)
    with torch.no_grad():
        return mean_kl_divergence(teacher(held), convert_qat(qgm)(held))


def test_distillation_qat_lowers_the_heldout_kl():
    """Same schedule, ranges and BN statistics; only the weight updates differ (lr 0 vs >0)."""
    torch.set_num_threads(1)
    teacher = trained_looking_net()
    g = torch.Generator().manual_seed(2)
    x, held = torch.randn(256, 3, 12, 12, generator=g), torch.randn(128, 3, 12, 12, generator=g)
    untrained = _heldout_kl(teacher, 1e-12, x, held)
    trained = _heldout_kl(teacher, 0.02, x, held)
    assert trained < 0.7 * untrained, (trained, untrained)
