"""Mixed precision: per-layer weight bits (4 or 8) chosen to meet a size and/or agreement budget.

The search space is what ONNX Runtime really runs: every conv/linear at 8- or 4-bit weights
(4-bit ones stored as packed INT4 in the ONNX file, ``intq.export.onnx``), activations at 8
bits. (16-bit activations and weights, and layers kept in float, run only in the reference
interpreter, so the search does not offer them.)

1. Calibrate the recipe at 8-bit weights once (``intq.ptq.quantize``): candidate 0.
2. Sensitivity: for each layer, swap only its weight quantizer for a 4-bit one (calibrated on
   its weights, with its bias correction redone for them: input means from one pass) and
   measure the logit noise it adds on held-out inputs, ``1/SQNR_layer - 1/SQNR_all8`` (linear
   noise-to-signal power). Layers are ordered by that noise per byte saved, cheapest first.
3. The k first layers of that order at 4 bits form candidate k. Each candidate that is judged
   is calibrated from scratch with its recipe (per-layer overrides), converted, exported and
   run in ONNX Runtime: its ONNX size and its top-1 agreement with the float model on the
   held-out inputs are measured, never predicted.
   - ``max_size``: the smallest k whose measured size fits (the most accurate fitting point);
   - ``target_agreement``: the largest k (at or above the size point) whose measured agreement
     reaches the target, by bisection (agreement falls, roughly monotonically, with k);
   - neither reachable: ``BudgetError`` naming the best point measured.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import fx, nn

from intq.convert.from_graph import convert_to_program
from intq.convert.program import IntProgram
from intq.errors import IntqError
from intq.eval.metrics import logit_sqnr_db, top1_agreement
from intq.export.onnx import export_onnx
from intq.fakequant import Quantizer
from intq.graph.bias_correction import InputMeans, correct_bias
from intq.graph.place import quant_layers
from intq.ptq import quantize
from intq.recipes import Recipe
from intq.runtime.onnxruntime import OrtSession

__all__ = [
    "HIGH_BITS",
    "LOW_BITS",
    "BudgetError",
    "Candidate",
    "LayerCost",
    "MixedPrecision",
    "MixedPrecisionSearch",
    "choose_mixed_precision",
    "parse_size",
]

HIGH_BITS, LOW_BITS = 8, 4
_BATCH = 32


class BudgetError(IntqError):
    """The budget cannot be met; the message names the best reachable point."""


@dataclass(frozen=True)
class LayerCost:
    """A layer's 4-bit trade: bytes saved in the ONNX file and logit noise added alone."""

    name: str
    weights: int
    bytes_saved: int
    sqnr_db: float
    added_noise: float

    @property
    def noise_per_byte(self) -> float:
        return self.added_noise / max(self.bytes_saved, 1)


@dataclass(frozen=True)
class Candidate:
    """A measured point: the first ``k`` layers of the order at 4 bits."""

    k: int
    size_bytes: int
    agreement: float
    sqnr_db: float


@dataclass
class MixedPrecision:
    """The chosen configuration, exported, with every point measured on the way."""

    recipe: Recipe
    bits: dict[str, int]
    chosen: Candidate
    onnx_bytes: bytes
    program: IntProgram
    qgm: fx.GraphModule
    order: list[LayerCost]
    measured: list[Candidate] = field(default_factory=list)
    holdout_samples: int = 0

    def as_dict(self) -> dict:
        return {"chosen": vars(self.chosen), "bits": self.bits,
                "holdout_samples": self.holdout_samples,
                "measured": [vars(c) for c in sorted(self.measured, key=lambda c: c.k)],
                "order": [vars(c) for c in self.order]}


def parse_size(text: str) -> int:
    """Bytes from ``"1500000"``, ``"3.5MB"``, ``"800kB"`` (decimal units, case-insensitive)."""
    units = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9}
    raw = text.strip().lower()
    unit = next((u for u in ("kb", "mb", "gb", "b") if raw.endswith(u)), "")
    try:
        value = float(raw[: len(raw) - len(unit)])
    except ValueError:
        raise ValueError(f"a size is bytes or a number with kB/MB/GB, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a size must be positive, got {text!r}")
    return int(value * units.get(unit, 1))


def choose_mixed_precision(model: nn.Module, calib: torch.Tensor, holdout: torch.Tensor,
                           recipe: Recipe, *, target_agreement: float | None = None,
                           max_size: int | None = None, weight_type: str = "auto",
                           leaf_modules=(), progress=None) -> MixedPrecision:
    """Per-layer weight bits for ``recipe``'s scheme meeting the budget (see module doc).

    ``holdout``: inputs not in ``calib`` on which agreement with ``model`` is measured.
    ``progress``: a callable taking one line of text, or None."""
    search = MixedPrecisionSearch(model, calib, holdout, recipe, weight_type=weight_type,
                                  leaf_modules=leaf_modules, progress=progress)
    return search.choose(target_agreement=target_agreement, max_size=max_size)


class MixedPrecisionSearch:
    """One sensitivity order and the candidates along it, each measured at most once: several
    budgets can be chosen from one search. ``rank_samples``: the first that many held-out
    inputs rank the layers (default: all); agreement is always measured on all of them."""

    def __init__(self, model: nn.Module, calib: torch.Tensor, holdout: torch.Tensor,
                 recipe: Recipe, *, weight_type: str = "auto", leaf_modules=(), progress=None,
                 rank_samples: int | None = None):
        self.model, self.calib, self.holdout = model, calib, holdout
        self.rank_samples = len(holdout) if rank_samples is None else rank_samples
        self.high = _with_weight_bits(recipe, HIGH_BITS)
        self.low_spec = dataclasses.replace(recipe.weight, bits=LOW_BITS)
        self.weight_type, self.leaf_modules = weight_type, tuple(leaf_modules)
        self.say = progress or (lambda _text: None)
        with torch.no_grad():
            self.reference = torch.cat([model(b) for b in holdout.split(_BATCH)])
        self.order: list[LayerCost] = []
        self.points: dict[int, tuple[Candidate, fx.GraphModule, IntProgram, bytes]] = {}

    def choose(self, *, target_agreement: float | None = None,
               max_size: int | None = None) -> MixedPrecision:
        """The configuration meeting the budget; BudgetError if none does."""
        if target_agreement is None and max_size is None:
            raise ValueError("give target_agreement and/or max_size")
        if not self.order:
            self.say("ranking layers by 4-bit sensitivity per byte")
            self.rank_layers()
        k = self.smallest_fitting(max_size) if max_size is not None else 0
        if target_agreement is not None:
            k = self.largest_agreeing(k, target_agreement)
        return self.result(k)

    # -- step 2: the order ------------------------------------------------------------------
    def rank_layers(self) -> None:
        self.measure(0)  # the all-8-bit model, calibrated once, is the one ranked
        qgm = self.points[0][1]
        x, reference = self.holdout[: self.rank_samples], self.reference[: self.rank_samples]
        base = logit_sqnr_db(reference, _logits(qgm, x))
        self.ranked, self.means = qgm, _input_means(qgm, self.calib)
        costs = []
        for name, layer in quant_layers(qgm):
            restore = _to_low_bits(layer, self.low_spec, self.means[name])
            try:
                sqnr = logit_sqnr_db(reference, _logits(qgm, x))
            finally:
                restore()
            costs.append(_layer_cost(name, layer, sqnr, base))
        self.order = sorted(costs, key=lambda c: c.noise_per_byte)
        self.sizes: dict[int, int] = {}

    def size_of(self, k: int) -> int:
        """ONNX bytes of candidate k, exported from the 8-bit calibration with the first k
        layers switched to 4 bits (the size depends on the bit widths, not on the ranges)."""
        if k not in self.sizes:
            layers = dict(quant_layers(self.ranked))
            restores = [_to_low_bits(layers[c.name], self.low_spec, self.means[c.name])
                        for c in self.order[:k]]
            try:
                self.sizes[k] = len(self._export(self.ranked)[1])
            finally:
                for restore in reversed(restores):
                    restore()
        return self.sizes[k]

    def _export(self, qgm: fx.GraphModule) -> tuple[IntProgram, bytes]:
        program = convert_to_program(qgm, tuple(self.calib.shape[1:]))
        return program, export_onnx(program, weight_type=self.weight_type).SerializeToString()

    # -- step 3: measured candidates -----------------------------------------------------------
    def recipe(self, k: int) -> Recipe:
        recipe = self.high
        for cost in self.order[:k]:
            recipe = recipe.with_override(cost.name, weight=self.low_spec)
        return dataclasses.replace(recipe, name=f"{self.high.name}-mixed-{k}of{len(self.order)}")

    def measure(self, k: int) -> Candidate:
        if k not in self.points:
            qgm = quantize(self.model, self.calib, self.recipe(k), leaf_modules=self.leaf_modules,
                           progress=False)
            program, onnx_bytes = self._export(qgm)
            logits = _ort_logits(onnx_bytes, self.holdout)
            point = Candidate(k, len(onnx_bytes), top1_agreement(self.reference, logits),
                              logit_sqnr_db(self.reference, logits))
            self.say(f"{k} layers at {LOW_BITS}-bit weights: {point.size_bytes / 1e6:.3f} MB, "
                     f"agreement {point.agreement:.3f}")
            self.points[k] = (point, qgm, program, onnx_bytes)
        return self.points[k][0]

    def smallest_fitting(self, max_size: int) -> int:
        """The smallest k whose ONNX size is at most ``max_size`` (bisection on ``size_of``,
        then measured for real)."""
        n = len(self.order)
        if self.size_of(n) > max_size:
            raise BudgetError(f"no configuration fits {max_size} bytes: the smallest, all "
                              f"{n} layers at {LOW_BITS}-bit weights, is {self.size_of(n)} "
                              f"bytes (agreement {self.measure(n).agreement:.3f})")
        lo, hi = -1, n  # size(lo) > max_size (or lo = -1), size(hi) <= max_size
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if self.size_of(mid) <= max_size else (mid, hi)
        while self.measure(hi).size_bytes > max_size:  # the real export, to the byte
            hi += 1
        return hi

    def largest_agreeing(self, k_min: int, target: float) -> int:
        """The largest k >= ``k_min`` whose measured agreement reaches ``target``."""
        first = self.measure(k_min)
        if first.agreement < target:
            what = "all layers at 8-bit weights" if k_min == 0 else (
                f"{k_min} layers at {LOW_BITS} bits, the most accurate point within the size")
            raise BudgetError(f"agreement {target:.3f} is out of reach: the best is "
                              f"{first.agreement:.3f} ({what}, {first.size_bytes} bytes, on "
                              f"{len(self.holdout)} held-out samples)")
        lo, hi = k_min, len(self.order) + 1  # agreement(lo) >= target; hi: not known to
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.measure(mid).agreement >= target:
                lo = mid
            else:
                hi = mid
        return lo

    def result(self, k: int) -> MixedPrecision:
        self.measure(k)
        point, qgm, program, onnx_bytes = self.points[k]
        low = {c.name for c in self.order[:k]}
        bits = {name: LOW_BITS if name in low else HIGH_BITS for name, _ in quant_layers(qgm)}
        measured = [p[0] for p in self.points.values()]
        return MixedPrecision(self.recipe(k), bits, point, onnx_bytes, program, qgm,
                              self.order, measured, len(self.holdout))


def _with_weight_bits(recipe: Recipe, bits: int) -> Recipe:
    return dataclasses.replace(recipe, weight=dataclasses.replace(recipe.weight, bits=bits))


def _logits(qgm: fx.GraphModule, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([qgm(b) for b in x.split(_BATCH)])


def _ort_logits(onnx_bytes: bytes, x: torch.Tensor) -> torch.Tensor:
    session = OrtSession(onnx_bytes, threads=torch.get_num_threads())
    return torch.cat([torch.from_numpy(np.asarray(session.run(b.numpy()), np.float32))
                      for b in x.split(_BATCH)])


def _input_means(qgm: fx.GraphModule, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-channel input means of every quantized layer of ``qgm`` on ``x``."""
    means = {name: InputMeans(layer) for name, layer in quant_layers(qgm)}
    try:
        _logits(qgm, x)
    finally:
        for m in means.values():
            m.remove()
    return {name: m.mean() for name, m in means.items()}


def _to_low_bits(layer, low_spec, input_mean) -> Callable[[], None]:
    """Give ``layer`` a weight quantizer of ``low_spec`` calibrated on its weights and redo
    its bias correction for it; returns the function that puts the old ones back."""
    saved_q, saved_bias = layer.weight_quantizer, layer.layer.bias.detach().clone()
    q = Quantizer(low_spec)
    q.observer.update(layer.layer.weight.detach())
    q.calculate_qparams()
    q.observe, q.frozen, q.fake_quant = False, True, True
    layer.weight_quantizer = q
    with torch.no_grad():
        layer.layer.bias.copy_(layer.float_bias)
    correct_bias(layer, input_mean)

    def restore() -> None:
        layer.weight_quantizer = saved_q
        with torch.no_grad():
            layer.layer.bias.copy_(saved_bias)

    return restore


def _layer_cost(name: str, layer, sqnr_db: float, base_sqnr_db: float) -> LayerCost:
    """The layer's 4-bit trade from its logit SQNR alone at 4 bits (and all-8-bit's)."""
    n = layer.layer.weight.numel()
    added = 10 ** (-sqnr_db / 10) - 10 ** (-base_sqnr_db / 10)
    return LayerCost(name, n, n // 2, sqnr_db, added)
