"""Learned up-or-down rounding of one layer's weights (Nagel et al. 2020, "AdaRound").

Each weight is rounded to ``floor(w/s)`` or ``floor(w/s) + 1``; a continuous V chooses:

    W̃(V) = s·(clamp(floor(W/s) + z + h(V), qmin, qmax) - z)
    h(V) = clamp(σ(V)·(ζ - γ) + γ, 0, 1),   ζ = 1.1, γ = -0.1      (rectified sigmoid)

and V minimizes the layer's output reconstruction error plus an annealed regularizer that
drives every h(V) to exactly 0 or 1:

    L(V) = mean_m Σ_o (f(W̃(V)·x̃_m + b)_o - t_{o,m})²  +  λ·Σ (1 - |2h(V) - 1|^β)

x̃_m: the layer's input in the model quantized so far, t_m = f(W·x_m + b): the float model's
output (activation f included where it is fused). The regularizer is off for the first
``warm_start`` of the iterations, then β follows a cosine from 20 to 2 (as AIMET). Adam on V,
one random batch of columns per step. The run stops early once the rounding has settled:
every h(V) exactly 0 or 1 and the hard rounding unchanged since the previous check.

``learn_scale_and_bias`` (an extension, as AdaQuant, Hubara et al. 2021) also learns, in the
same objective, each weight scale as s·exp(g) (g per channel, or one per tensor when the
weights are quantized per tensor) and a bias shift Δb: the integer grid choice stays
floor(W/s) + h(V), only the float value of a step and the bias move.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from intq.graph.fused import apply_activation

__all__ = [
    "AdaRoundSettings",
    "LayerProblem",
    "RoundingResult",
    "annealed_beta",
    "learn_rounding",
    "minimize_with_annealed_regularizer",
    "rectified_sigmoid",
    "rectified_sigmoid_inverse",
    "reconstruction_error",
    "rounded_weight",
    "rounding_regularizer",
]

ZETA, GAMMA = 1.1, -0.1
GRANULARITIES = ("layer", "block")
_EVAL_COLUMNS = 4096  # columns per chunk when scoring a whole layer


@dataclass(frozen=True)
class AdaRoundSettings:
    """How hard to optimize each layer. ``iterations``: Adam steps at most; ``batch_columns``:
    sampled output positions per step; ``lr``: Adam learning rate; ``reg_weight``: λ;
    ``beta``: (start, end) of the annealing; ``warm_start``: fraction of the iterations
    without regularizer; ``check_every``: steps between two early-stop checks;
    ``images``: calibration samples used (the first ones; both models' activations of all of
    them are held in memory, about 1 GB for EfficientNet-Lite0 at 64); ``column_budget``: at
    most that many input values (columns x patch size) are kept for one layer;
    ``learn_scale_and_bias``: also learn the weight scales and a bias shift (module docstring)
    with Adam at ``scale_bias_lr``; ``granularity``: "layer" (each layer's output, columns)
    or "block" (the output of blocks of at least ``block_layers`` layers, ``batch_images``
    whole images per step: ``intq.adaptive_rounding.blocks``)."""

    iterations: int = 1000
    batch_columns: int = 256
    lr: float = 1e-2
    reg_weight: float = 0.01
    beta: tuple[float, float] = (20.0, 2.0)
    warm_start: float = 0.2
    check_every: int = 50
    images: int = 64
    column_budget: int = 2**24
    seed: int = 0
    learn_scale_and_bias: bool = False
    scale_bias_lr: float = 1e-3
    granularity: str = "layer"
    block_layers: int = 3
    batch_images: int = 8

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"AdaRoundSettings: granularity must be one of "
                             f"{', '.join(GRANULARITIES)}, got {self.granularity!r}")
        if self.granularity == "block" and self.learn_scale_and_bias:
            raise ValueError("AdaRoundSettings: learn_scale_and_bias needs granularity 'layer'")
        for name in ("iterations", "batch_columns", "check_every", "images", "column_budget",
                     "block_layers", "batch_images"):
            if getattr(self, name) < 1:
                raise ValueError(f"AdaRoundSettings: {name} must be >= 1, "
                                 f"got {getattr(self, name)}")
        if not self.lr > 0 or not self.scale_bias_lr > 0 or not self.reg_weight >= 0:
            raise ValueError("AdaRoundSettings: lr and scale_bias_lr must be > 0, "
                             "reg_weight >= 0")
        if not 0 <= self.warm_start < 1:
            raise ValueError("AdaRoundSettings: warm_start must be in [0, 1), "
                             f"got {self.warm_start}")
        if not self.beta[0] >= self.beta[1] > 0:
            raise ValueError(f"AdaRoundSettings: beta must be (start, end), start >= end > 0, "
                             f"got {self.beta}")


@dataclass
class LayerProblem:
    """One layer's rounding problem in grouped form (``intq.adaround.columns``): weights
    W_g / s as floor (G, O/G, K) and remainder in [0, 1), scale and zero point (G, O/G, 1),
    grid [qmin, qmax], the round-to-nearest weights (G, O/G, K), bias (G, O/G, 1) or None,
    the quantized-model input columns X̃_g (G, K, M), the float model's pre-activation
    W·x + b (G, O/G, M), the fused activation f (the target is f(W·x + b)), and whether the
    scale is one per output channel (else one for the tensor)."""

    floor: torch.Tensor
    remainder: torch.Tensor
    scale: torch.Tensor
    zero_point: torch.Tensor
    qmin: int
    qmax: int
    nearest: torch.Tensor
    bias: torch.Tensor | None
    inputs: torch.Tensor
    preactivation: torch.Tensor
    activation: str | None
    per_channel: bool = True

    def __post_init__(self) -> None:
        self.target = apply_activation(self.preactivation, self.activation)

    def weight(self, h: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """W̃ (G, O/G, K) for h in [0, 1]; s is the problem's scale unless ``scale`` is given."""
        return rounded_weight(self.floor, h, self.scale if scale is None else scale,
                              self.zero_point, self.qmin, self.qmax)

    def output(self, weight: torch.Tensor, columns: torch.Tensor | slice,
               bias: torch.Tensor | None = None) -> torch.Tensor:
        """f(W·x̃ + b) on the chosen columns (G, O/G, m); b is the problem's bias unless
        ``bias`` is given."""
        return self._output(weight, self.inputs[:, :, columns], bias)

    def sampled(self, weight: torch.Tensor, columns: torch.Tensor,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(W·x̃ + b), target) on the columns of the index tensor ``columns`` (G, O/G, m),
        gathered from column-major copies: picking scattered columns out of (G, K, M) costs
        a strided gather per value, out of (M, G, K) one contiguous row per column."""
        x = self._inputs_by_column[columns].permute(1, 2, 0)
        return self._output(weight, x, bias), self._target_by_column[columns].permute(1, 2, 0)

    def _output(self, weight: torch.Tensor, x: torch.Tensor,
                bias: torch.Tensor | None) -> torch.Tensor:
        bias = self.bias if bias is None else bias
        y = torch.bmm(weight, x) if bias is None else torch.baddbmm(bias, weight, x)
        return apply_activation(y, self.activation)

    @functools.cached_property
    def _inputs_by_column(self) -> torch.Tensor:
        return self.inputs.permute(2, 0, 1).contiguous()

    @functools.cached_property
    def _target_by_column(self) -> torch.Tensor:
        return self.target.permute(2, 0, 1).contiguous()

    @property
    def columns(self) -> int:
        return self.inputs.shape[2]


@dataclass(frozen=True)
class RoundingResult:
    """The learned rounding ``up`` (bool, G, O/G, K: ceil instead of floor), the steps run,
    the reconstruction error (mean over columns of the per-column squared error summed over
    channels) of nearest and of learned rounding on all the problem's columns, and the scale
    (G, O/G, 1) and bias (G, O/G, 1 or None) that go with the learned rounding (the problem's
    own unless ``learn_scale_and_bias``)."""

    up: torch.Tensor
    steps: int
    nearest_error: float
    learned_error: float
    scale: torch.Tensor
    bias: torch.Tensor | None


def rounded_weight(floor: torch.Tensor, h: torch.Tensor, scale: torch.Tensor,
                   zero_point: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """W̃ = s·(clamp(floor + z + h, qmin, qmax) - z): floor(W/s) rounded up by h in [0, 1]."""
    return scale * (torch.clamp(floor + zero_point + h, qmin, qmax) - zero_point)


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) = clamp(σ(V)·(ζ - γ) + γ, 0, 1)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def rectified_sigmoid_inverse(h: torch.Tensor) -> torch.Tensor:
    """V with h(V) = h for h in [0, 1): V = -log((ζ - γ)/(h - γ) - 1)."""
    return -torch.log((ZETA - GAMMA) / (h - GAMMA) - 1.0)


def rounding_regularizer(h: torch.Tensor, beta: float) -> torch.Tensor:
    """f_reg = Σ 1 - |2h - 1|^β: 0 when every h is 0 or 1."""
    return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()


def annealed_beta(step: int, iterations: int, settings: AdaRoundSettings) -> float | None:
    """β at ``step``: None during the warm start, then a cosine from beta[0] to beta[1]."""
    warm = settings.warm_start * iterations
    if step < warm:
        return None
    progress = (step - warm) / max(iterations - warm, 1)
    start, end = settings.beta
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * progress))


def reconstruction_error(problem: LayerProblem, weight: torch.Tensor,
                         bias: torch.Tensor | None = None) -> float:
    """mean_m Σ_o (f(W̃·x̃_m + b)_o - t_{o,m})² over all columns (chunked); b is the
    problem's bias unless ``bias`` is given."""
    total = 0.0
    with torch.no_grad():
        for start in range(0, problem.columns, _EVAL_COLUMNS):
            chunk = slice(start, start + _EVAL_COLUMNS)
            diff = problem.output(weight, chunk, bias) - problem.target[:, :, chunk]
            total += float(diff.double().pow(2).sum())
    return total / problem.columns


def learn_rounding(problem: LayerProblem, settings: AdaRoundSettings,
                   generator: torch.Generator) -> RoundingResult:
    """Optimize V by Adam (module docstring) and return the hard rounding h(V) >= 0.5."""
    v = rectified_sigmoid_inverse(problem.remainder.clamp(0.0, 1.0 - 1e-6)).requires_grad_()
    parameter_groups = [{"params": [v], "lr": settings.lr}]
    log_gain, bias = _scale_and_bias_parameters(problem, settings.learn_scale_and_bias)
    if log_gain is not None:
        parameter_groups.append({"params": [log_gain, bias], "lr": settings.scale_bias_lr})
    optimizer = torch.optim.Adam(parameter_groups)

    def reconstruction() -> tuple[torch.Tensor, list[torch.Tensor]]:
        batch = torch.randint(problem.columns, (settings.batch_columns,), generator=generator)
        h = rectified_sigmoid(v)
        scale = None if log_gain is None else problem.scale * log_gain.exp()
        output, target = problem.sampled(problem.weight(h, scale), batch, bias)
        return (output - target).pow(2).sum(dim=(0, 1)).mean(), [h]

    steps = minimize_with_annealed_regularizer(reconstruction, [v], optimizer, settings)
    up = rectified_sigmoid(v.detach()) >= 0.5
    scale = problem.scale if log_gain is None else (problem.scale * log_gain.exp()).detach()
    learned_bias = problem.bias if bias is None else bias.detach()
    learned = reconstruction_error(problem, problem.weight(up.float(), scale), learned_bias)
    return RoundingResult(up, steps, reconstruction_error(problem, problem.nearest), learned,
                          scale, learned_bias)


def _scale_and_bias_parameters(problem: LayerProblem, learn: bool
                               ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(log gain g of the scale: (G, O/G, 1) per channel, else (1, 1, 1); the bias to learn,
    starting at the problem's or at 0), both zero-gradient leaves; (None, None) unless
    ``learn``."""
    if not learn:
        return None, None
    scale = problem.scale
    log_gain = torch.zeros(scale.shape if problem.per_channel else (1, 1, 1), dtype=scale.dtype)
    bias = (torch.zeros_like(scale) if problem.bias is None else problem.bias.clone())
    return log_gain.requires_grad_(), bias.requires_grad_()


def minimize_with_annealed_regularizer(
    reconstruction: Callable[[], tuple[torch.Tensor, list[torch.Tensor]]],
    vs: list[torch.Tensor], optimizer: torch.optim.Optimizer, settings: AdaRoundSettings,
) -> int:
    """Step ``optimizer`` on reconstruction() + λ·Σ f_reg(h) (the regularizer from the end
    of the warm start, β annealed) until every h(V) of ``vs`` is 0 or 1 and the hard
    rounding stable across two checks, or ``settings.iterations``; the steps run.
    ``reconstruction`` returns the loss of a fresh batch and the h(V) it used."""
    previous = None
    for step in range(settings.iterations):
        loss, hs = reconstruction()
        beta = annealed_beta(step, settings.iterations, settings)
        if beta is not None:
            loss = loss + settings.reg_weight * sum(rounding_regularizer(h, beta) for h in hs)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if beta is not None and (step + 1) % settings.check_every == 0:
            previous, settled = _settled(vs, previous)
            if settled:
                return step + 1
    return settings.iterations


def _settled(vs: list[torch.Tensor], previous: list[torch.Tensor] | None
             ) -> tuple[list[torch.Tensor], bool]:
    """(hard rounding now, True when every h(V) is exactly 0 or 1 and the hard rounding is
    the one of the previous check)."""
    with torch.no_grad():
        hs = [rectified_sigmoid(v) for v in vs]
        up = [h >= 0.5 for h in hs]
        binary = all(bool(((h == 0) | (h == 1)).all()) for h in hs)
    same = previous is not None and all(torch.equal(a, b) for a, b in zip(up, previous,
                                                                          strict=True))
    return up, binary and same
