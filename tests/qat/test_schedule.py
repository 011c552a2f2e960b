"""QATSchedule validation and the switches apply_schedule sets on a prepared model."""

import pytest
import torch
from torch import nn

from intq.fakequant import Quantizer
from intq.graph.place import activation_quantizers
from intq.qat import QATConvBn2d, QATSchedule, apply_schedule, prepare_qat


def small_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


@pytest.mark.parametrize("fields", [
    {"quant_delay": -1}, {"quant_delay": 1.5}, {"quant_delay": True}, {"quant_delay": None},
    {"bn_freeze_step": -2}, {"quant_delay": 5, "bn_freeze_step": 4},
    {"quant_delay": 5, "act_range_freeze_step": 0},
])
def test_invalid_schedules_raise(fields):
    with pytest.raises(ValueError, match="QATSchedule"):
        QATSchedule(**fields)


def test_defaults_quantize_from_the_start_and_never_freeze():
    s = QATSchedule()
    assert s.quantizing(0) and not s.bn_frozen(10**9) and not s.ranges_frozen(10**9)


def test_for_total_steps_freezes_bn_then_ranges():
    s = QATSchedule.for_total_steps(100, quant_delay=20)
    assert (s.quant_delay, s.bn_freeze_step, s.act_range_freeze_step) == (20, 60, 80)


def test_apply_schedule_sets_every_switch():
    x = torch.randn(4, 1, 6, 6)
    qgm = prepare_qat(small_net(), x[:2])
    schedule = QATSchedule(quant_delay=1, bn_freeze_step=2, act_range_freeze_step=3)
    quantizers = [m for m in qgm.modules() if isinstance(m, Quantizer)]
    (bn_layer,) = [m for m in qgm.modules() if isinstance(m, QATConvBn2d)]
    acts = [q for _, q in activation_quantizers(qgm)]
    expected = {0: (False, False, False), 1: (True, False, False), 2: (True, True, False),
                3: (True, True, True)}
    for step, (quantizing, bn_frozen, ranges_frozen) in expected.items():
        apply_schedule(qgm, schedule, step)
        assert all(q.fake_quant == quantizing for q in quantizers)
        assert bn_layer.bn_frozen == bn_frozen
        assert all(q.frozen == ranges_frozen for q in acts)
        qgm(x)


def test_freezing_ranges_before_any_data_is_refused():
    qgm = prepare_qat(small_net(), torch.randn(2, 1, 6, 6))
    with pytest.raises(ValueError, match="before it saw any data"):
        apply_schedule(qgm, QATSchedule(act_range_freeze_step=0), 0)
