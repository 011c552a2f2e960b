"""The QAT schedule: when quantization starts, when BN statistics and activation ranges freeze.

Paper (PAPER.md 3, TF ``create_training_graph``): fine-tune from a trained float model,
optionally after ``quant_delay`` float steps; freeze the BN moving statistics near
convergence (``bn_freeze_step``, then the layer computes the inference graph); later freeze
the activation ranges (``act_range_freeze_step``; 0 keeps ranges set before training, see
``intq.qat.ranges``). ``apply_schedule(qgm, schedule, step)``
sets every switch of a ``prepare_qat`` model for global step ``step`` (0-based), so a run is
a pure function of the step counter and can be resumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import fx

from intq.fakequant import Quantizer
from intq.graph.place import activation_quantizers
from intq.qat.bn_fold import QATConvBn2d

__all__ = ["QATSchedule", "apply_schedule"]

_BN_FREEZE_FRACTION = 0.5
_RANGE_FREEZE_FRACTION = 0.75


@dataclass(frozen=True)
class QATSchedule:
    """Steps (0-based) at which each switch flips; ``None`` = never.

    Defaults: quantize from the first step, never freeze. ``for_total_steps`` gives the
    trusted fine-tuning schedule: BN frozen after half the steps, ranges after three quarters.
    """

    quant_delay: int = 0
    bn_freeze_step: int | None = None
    act_range_freeze_step: int | None = None

    def __post_init__(self) -> None:
        _check_step("quant_delay", self.quant_delay, allow_none=False)
        for name in ("bn_freeze_step", "act_range_freeze_step"):
            value = getattr(self, name)
            _check_step(name, value, allow_none=True)
            if value is not None and value < self.quant_delay:
                raise ValueError(f"QATSchedule: {name}={value} comes before quant_delay="
                                 f"{self.quant_delay}; freeze only once quantization is on")

    @classmethod
    def for_total_steps(cls, total_steps: int, quant_delay: int = 0) -> QATSchedule:
        """Quantize after ``quant_delay`` steps, freeze BN at 50% and ranges at 75% of the run
        (ranges after at least one quantized step, so that they have seen data)."""
        _check_step("total_steps", total_steps, allow_none=False)
        span = max(total_steps - quant_delay, 0)
        return cls(quant_delay=quant_delay,
                   bn_freeze_step=quant_delay + int(span * _BN_FREEZE_FRACTION),
                   act_range_freeze_step=quant_delay + max(1, int(span * _RANGE_FREEZE_FRACTION)))

    def quantizing(self, step: int) -> bool:
        return step >= self.quant_delay

    def bn_frozen(self, step: int) -> bool:
        return self.bn_freeze_step is not None and step >= self.bn_freeze_step

    def ranges_frozen(self, step: int) -> bool:
        return self.act_range_freeze_step is not None and step >= self.act_range_freeze_step


def apply_schedule(qgm: fx.GraphModule, schedule: QATSchedule, step: int) -> None:
    """Set fake quantization, BN freeze and activation-range freeze of ``qgm`` for ``step``.

    Before ``quant_delay`` every quantizer observes but passes values through unchanged.
    """
    _check_step("step", step, allow_none=False)
    for module in qgm.modules():
        if isinstance(module, Quantizer):
            module.fake_quant = schedule.quantizing(step)
        elif isinstance(module, QATConvBn2d):
            module.bn_frozen = schedule.bn_frozen(step)
    for _name, quantizer in activation_quantizers(qgm):
        freeze = schedule.ranges_frozen(step)
        if freeze and not quantizer.observer.has_data and not quantizer.frozen:
            raise ValueError("apply_schedule: an activation range is frozen before it saw any "
                             "data; run at least one step before act_range_freeze_step, or "
                             "set the ranges first (calibrate_activation_ranges)")
        quantizer.frozen = freeze


def _check_step(name: str, value: object, *, allow_none: bool) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"QATSchedule: {name} must be an integer >= 0"
                         f"{' or None' if allow_none else ''}, got {value!r}")
