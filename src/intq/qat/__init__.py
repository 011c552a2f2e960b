"""Quantization-aware training (PAPER.md 2-3): BN folding for training, schedule, prepare/convert.

    qgm = prepare_qat(model, x[:2], "sym-per-channel-8")
    schedule = QATSchedule.for_total_steps(steps)
    for step, (x, y) in enumerate(batches):
        apply_schedule(qgm, schedule, step)
        loss = F.cross_entropy(qgm(x), y); ...   # or distillation_loss(qgm(x), teacher(x))
    program = convert_to_program(convert_qat(qgm), input_shape)
"""

from intq.qat.bn_fold import QATConvBn2d
from intq.qat.checkpoint import (
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)
from intq.qat.distill import distillation_loss
from intq.qat.distributed import GlobalBatchEMAObserver, make_distributed
from intq.qat.from_ptq import FROM_PTQ_SCHEDULE, prepare_qat_from_ptq
from intq.qat.prepare import EMA_DECAY, convert_qat, prepare_qat, qat_layers, qat_recipe
from intq.qat.ranges import calibrate_activation_ranges
from intq.qat.schedule import QATSchedule, apply_schedule
from intq.qat.train import OPTIMIZERS, QATProgress, train_qat

__all__ = [
    "EMA_DECAY",
    "OPTIMIZERS",
    "FROM_PTQ_SCHEDULE",
    "GlobalBatchEMAObserver",
    "QATConvBn2d",
    "QATProgress",
    "QATSchedule",
    "apply_schedule",
    "calibrate_activation_ranges",
    "convert_qat",
    "distillation_loss",
    "load_checkpoint",
    "make_distributed",
    "prepare_qat",
    "prepare_qat_from_ptq",
    "qat_layers",
    "qat_recipe",
    "restore_training_state",
    "save_checkpoint",
    "train_qat",
    "training_state",
]
