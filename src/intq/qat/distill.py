"""Label-free distillation loss: the float teacher's softmax as the QAT student's target.

    loss = T² · KL(softmax(t/T) ‖ softmax(s/T)),   averaged over the batch

(Hinton et al. 2015), with teacher logits ``t``, student logits ``s`` and temperature ``T``;
the ``T²`` keeps gradient magnitudes comparable across temperatures. At ``T = 1`` it is the
mean KL divergence that ``intq.eval.mean_kl_divergence`` reports between float and quantized
logits, so the training objective is the evaluation metric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_loss"]


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor,
                      temperature: float = 1.0) -> torch.Tensor:
    """``T²·KL(softmax(teacher/T) ‖ softmax(student/T))`` averaged over the batch (nats);
    no gradient flows into ``teacher``."""
    if not temperature > 0:
        raise ValueError(f"distillation_loss: temperature must be > 0, got {temperature}")
    if student.shape != teacher.shape or student.dim() != 2:
        raise ValueError(f"distillation_loss: student and teacher logits must both be "
                         f"(batch, classes), got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    log_p = F.log_softmax(teacher.detach().float() / temperature, dim=1)
    log_q = F.log_softmax(student.float() / temperature, dim=1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="batchmean")
    return kl * (temperature * temperature)
