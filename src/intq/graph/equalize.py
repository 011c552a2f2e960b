"""Cross-layer equalization (Nagel et al. 2019, DFQ section 4.1): rescale consecutive layers
so that per-tensor weight quantization wastes fewer levels.

For a pair `y = f(W1·x + b1)`, `z = W2·y + b2` in which the first layer's output is read only
by the second layer, and `f` is positive homogeneous (`f(x/s) = f(x)/s` for `s > 0`: identity
and relu), scaling output channel i of the first layer by `1/s_i` and input channel i of the
second by `s_i` keeps the function exact:

    W1[i] <- W1[i] / s_i      b1[i] <- b1[i] / s_i      W2[:, i] <- W2[:, i] · s_i
    s_i = sqrt(r1_i · r2_i) / r2_i

with `r1_i = max |W1[i]|` and `r2_i = max |W2[:, i]|` on the folded weights (the ones that
are quantized), so both ranges become `sqrt(r1_i · r2_i)`. A grouped/depthwise second layer
reads input channel i only through its group: `W2[group(i) outputs, i mod in_per_group]`.
A first layer with its BN still inside (QAT) is scaled through the BN: `γ[i], β[i] <- γ[i] / s_i,
β[i] / s_i` multiplies the BN output by `1/s_i` in eval and in training mode (batch
statistics of the conv output are unchanged), and its folded weights `γW/σ` scale with it.
Channels with a zero range keep `s_i = 1`. Every layer is in at most two pairs (as first and
as second); a chain is swept in graph order until no scale moves by more than `tolerance`.

relu6 is not positive homogeneous: `min(max(x/s, 0), 6) != min(max(x, 0), 6)/s` once the
clamp is hit. It is exact on data whose pre-activation `y_i` of channel i never exceeds 6 and
never exceeds 6 after scaling either (`max y_i / S_i <= 6`, `S_i` the product of that channel's
`s_i` over the sweeps). Given `relu6_peaks` (the first layer's per-channel maximum
pre-activation on sample data, `relu6_preactivation_peaks`), a relu6 pair is equalized with
the relu6 kept: a channel whose peak reaches 6 keeps `S_i = 1`, the others are bounded by
`S_i >= peak_i / 6`. Without peaks for it, a relu6 pair is left alone (replacing relu6 by
relu, as AIMET does, removes a clamp that EfficientNet-Lite relies on: its 8-bit PTQ agreement
fell from 0.88 to 0.46).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import fx, nn

from intq.graph._fx import calls_module, copy_graph_module, finish
from intq.graph.fold import folded_parameters
from intq.graph.fused import FusedConv2d, FusedLinear

__all__ = ["EqualizedPair", "Equalization", "cross_layer_equalize", "relu6_preactivation_peaks"]

_LAYERS = (FusedConv2d, FusedLinear)
_HOMOGENEOUS = (None, "relu")
RELU6_CLAMP = 6.0


@dataclass(frozen=True)
class EqualizedPair:
    """Two consecutive layers (node targets) that were equalized, the activation between, and
    for a relu6 pair the channels kept at scale 1 because their peak reaches the clamp."""

    first: str
    second: str
    activation: str | None
    clamped_channels: int = 0


@dataclass(frozen=True)
class Equalization:
    """What `cross_layer_equalize` did: the pairs, the sweeps run, and the largest
    `|s_i - 1|` of the last sweep (below the tolerance when it converged)."""

    pairs: tuple[EqualizedPair, ...]
    sweeps: int
    last_change: float
    converged: bool


def cross_layer_equalize(
    gm: fx.GraphModule,
    *,
    relu6_peaks: Mapping[str, torch.Tensor] | None = None,
    tolerance: float = 1e-4,
    max_sweeps: int = 100,
) -> tuple[fx.GraphModule, Equalization]:
    """A copy of the fused graph `gm` with every equalizable pair equalized, and a report.

    Sweeps over all pairs in graph order until `max |s_i - 1| <= tolerance` or `max_sweeps`.
    Applying it again to its own result changes every weight by at most about `tolerance`.
    `relu6_peaks` (first layer's node target -> per-channel peak pre-activation) lets relu6
    pairs be equalized within the bounds of the module docstring.
    """
    if tolerance <= 0 or max_sweeps < 1:
        raise ValueError(f"need tolerance > 0 and max_sweeps >= 1, got {tolerance}, {max_sweeps}")
    gm = copy_graph_module(gm)
    peaks = {name: _saturated_as_inf(p) for name, p in (relu6_peaks or {}).items()}
    pairs = _equalizable_pairs(gm, peaks)
    modules = [(gm.get_submodule(a), gm.get_submodule(b), peaks.get(a)) for a, b in pairs]
    sweeps, change = 0, 0.0
    while modules and sweeps < max_sweeps:
        sweeps += 1
        change = max(_equalize_pair(*pair) for pair in modules)
        if change <= tolerance:
            break
    report = Equalization(
        pairs=tuple(EqualizedPair(a, b, first.activation, _clamped(first, peak))
                    for (a, b), (first, _, peak) in zip(pairs, modules, strict=True)),
        sweeps=sweeps, last_change=change, converged=change <= tolerance,
    )
    return finish(gm), report


@torch.no_grad()
def relu6_preactivation_peaks(gm: fx.GraphModule,
                              batches: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-channel maximum of the pre-activation (before the relu6) of every conv/linear layer
    with a fused relu6 of the fused graph `gm`, over `batches` (run in eval mode)."""
    peaks: dict[str, torch.Tensor] = {}
    hooks = []
    for node in gm.graph.nodes:
        if calls_module(gm, node, _LAYERS):
            fused = gm.get_submodule(node.target)
            if fused.activation == "relu6":
                inner = fused.bn if fused.bn is not None else _layer(fused)
                hooks.append(inner.register_forward_hook(_peak_recorder(peaks, str(node.target))))
    was_training = gm.training
    try:
        gm.eval()
        for x in batches:
            gm(x)
    finally:
        gm.train(was_training)
        for hook in hooks:
            hook.remove()
    return peaks


def _peak_recorder(peaks: dict[str, torch.Tensor], name: str):
    def record(_module, _inputs, y: torch.Tensor) -> None:
        channel_max = y.detach().transpose(0, 1).reshape(y.shape[1], -1).amax(1).double()
        previous = peaks.get(name)
        peaks[name] = channel_max if previous is None else torch.maximum(previous, channel_max)
    return record


def _saturated_as_inf(peak: torch.Tensor) -> torch.Tensor:
    """The peaks in float64, +inf for a channel that reaches the clamp (it keeps S_i = 1)."""
    peak = peak.detach().double()
    return torch.where(peak >= RELU6_CLAMP, torch.inf, peak)


def _clamped(first: FusedConv2d | FusedLinear, peak: torch.Tensor | None) -> int:
    if first.activation != "relu6" or peak is None:
        return 0
    return int(peak.isinf().sum())


def _equalizable_pairs(gm: fx.GraphModule, relu6_peaks: Mapping[str, torch.Tensor]
                       ) -> list[tuple[str, str]]:
    """(first, second) node targets: conv->conv or linear->linear, the first's output read
    only by the second, with an activation between that equalization may cross (relu6 only
    with peaks for the first)."""
    pairs = []
    for node in gm.graph.nodes:
        if not calls_module(gm, node, _LAYERS) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        if not calls_module(gm, user, _LAYERS) or user.args != (node,) or user.kwargs:
            continue
        first, second = gm.get_submodule(node.target), gm.get_submodule(user.target)
        crossable = first.activation in _HOMOGENEOUS or (
            first.activation == "relu6" and str(node.target) in relu6_peaks)
        if type(first) is type(second) and crossable and _scalable(first):
            pairs.append((str(node.target), str(user.target)))
    return pairs


def _scalable(fused: FusedConv2d | FusedLinear) -> bool:
    """True when the output channels can be scaled: no BN, or a BN with γ and β."""
    return fused.bn is None or fused.bn.affine


def _layer(fused: FusedConv2d | FusedLinear) -> nn.Conv2d | nn.Linear:
    return fused.conv if isinstance(fused, FusedConv2d) else fused.linear


def _groups(fused: FusedConv2d | FusedLinear) -> int:
    return fused.conv.groups if isinstance(fused, FusedConv2d) else 1


def _folded_weight(fused: FusedConv2d | FusedLinear) -> torch.Tensor:
    """The weights that get quantized, in float64: `W`, or `γW/σ` while the BN is inside."""
    weight = _layer(fused).weight.detach().double()
    return weight if fused.bn is None else folded_parameters(weight, None, fused.bn)[0]


def _by_group(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """`weight` (out, in/groups, ...) viewed as (groups, out/groups, in/groups, kernel)."""
    return weight.reshape(groups, weight.shape[0] // groups, weight.shape[1], -1)


def _output_ranges(fused: FusedConv2d | FusedLinear) -> torch.Tensor:
    """`r1_i = max |W[i]|` per output channel of the folded weights."""
    return _folded_weight(fused).flatten(1).abs().amax(1)


def _input_ranges(fused: FusedConv2d | FusedLinear) -> torch.Tensor:
    """`r2_i = max |W[:, i]|` per input channel of the folded weights (within its group)."""
    grouped = _by_group(_folded_weight(fused), _groups(fused)).abs()
    return grouped.amax(dim=(1, 3)).reshape(-1)


@torch.no_grad()
def _equalize_pair(first: FusedConv2d | FusedLinear, second: FusedConv2d | FusedLinear,
                   peak: torch.Tensor | None) -> float:
    """Apply `s_i = sqrt(r1_i · r2_i) / r2_i` to one pair, within the relu6 bounds when
    `peak` is given (then updated in place to the scaled peaks); returns `max |s_i - 1|`."""
    r1, r2 = _output_ranges(first), _input_ranges(second)
    assert r1.shape == r2.shape, f"channel mismatch {tuple(r1.shape)} vs {tuple(r2.shape)}"
    usable = (r1 > 0) & (r2 > 0)
    s = torch.where(usable, torch.sqrt(r1 * r2) / torch.where(usable, r2, 1.0), 1.0)
    if first.activation == "relu6" and peak is not None:
        s = torch.where(peak.isinf(), 1.0, torch.maximum(s, peak / RELU6_CLAMP))
        peak /= s
    _scale_outputs(first, 1.0 / s)
    _scale_inputs(second, s)
    return float((s - 1.0).abs().max())


def _scale_outputs(fused: FusedConv2d | FusedLinear, factor: torch.Tensor) -> None:
    """Multiply output channel i of `fused` by `factor[i]` (through its BN when present)."""
    if fused.bn is not None:
        params = (fused.bn.weight, fused.bn.bias)
    else:
        params = (_layer(fused).weight, _layer(fused).bias)
    for p in params:
        if p is not None:
            shape = (-1, *([1] * (p.dim() - 1)))
            p.copy_((p.double() * factor.reshape(shape)).to(p.dtype))


def _scale_inputs(fused: FusedConv2d | FusedLinear, factor: torch.Tensor) -> None:
    """Multiply the weights reading input channel i of `fused` by `factor[i]`."""
    weight, groups = _layer(fused).weight, _groups(fused)
    per_group = factor.reshape(groups, 1, -1, 1)
    scaled = _by_group(weight.double(), groups) * per_group
    weight.copy_(scaled.reshape(weight.shape).to(weight.dtype))
