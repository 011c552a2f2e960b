"""The integers a simulated-quantized torch graph computes, named like the IntProgram's tensors.

Every activation quantizer's output is on its grid, x̂ = S·(q - Z), so q = round(x̂ / S) + Z
recovers the integer exactly (|q - Z| < 2^16, far from float32's rounding of x̂ / S). The
lossless ops after a quantizer (max pool, concat, flatten, reshape, pad) carry that grid on.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import fx

from intq.convert.program import IntProgram, QLinear, QTensor
from intq.graph.place import ACT_PREFIX
from intq.runtime.reference import run_reference


class _Recorder(fx.Interpreter):
    """Runs the graph node by node and keeps every node's output."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, object] = {}

    def run_node(self, n: fx.Node):
        out = super().run_node(n)
        self.values[n] = out
        return out


def _is_quantizer(node: fx.Node) -> bool:
    return node.op == "call_module" and str(node.target).startswith(f"{ACT_PREFIX}.")


def simulated_values(qgm: fx.GraphModule, program: IntProgram, x: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """The float value of every integer tensor of ``program`` in the simulation of ``x``.

    A quantizer node stands for the tensor its owner writes: the program names it after the
    owner, or after the quantizer itself when the owner is float (the model input, a float
    region) and the quantizer becomes a Quantize op. A lossless node is its own tensor."""
    recorder = _Recorder(qgm)
    with torch.no_grad():
        recorder.run(x)
    found: dict[str, torch.Tensor] = {}
    for node, value in recorder.values.items():
        if _is_quantizer(node):
            owner = node.args[0]
            found[owner.name if owner.name in program.tensors else node.name] = value
    for node, value in recorder.values.items():
        if node.name in program.tensors and node.name not in found:
            found[node.name] = value
    return found


def simulated_integers(qgm: fx.GraphModule, program: IntProgram, x: torch.Tensor
                       ) -> dict[str, np.ndarray]:
    """``round(x̂ / S) + Z`` of every integer tensor of ``program`` (S, Z from its QTensor),
    in the QTensor's dtype; a value off its grid by more than 1e-3 LSB fails."""
    out = {}
    for name, value in simulated_values(qgm, program, x).items():
        qt = program.tensors[name]
        steps = value.double().numpy() / qt.scale
        q = np.rint(steps)
        off = np.abs(steps - q).max(initial=0)
        assert off < 1e-3, f"{name}: simulated values are {off:.3g} LSB off the grid"
        out[name] = (q + qt.zero_point).astype(qt.dtype)
    missing = set(program.tensors) - set(out)
    assert not missing, f"no simulated value for program tensors {sorted(missing)}"
    return out


def locally_recomputed(program: IntProgram, given: dict[str, np.ndarray], x: np.ndarray,
                       mode: str) -> dict[str, np.ndarray]:
    """Every integer tensor of ``program`` recomputed by the reference interpreter from the
    ``given`` integer tensors (and the program input ``x``). The interpreter is fed everything
    but the one tensor, so only the op writing it runs (on the given values of its inputs):
    differences do not propagate from op to op."""
    given = {program.inputs[0].name: x, **given}
    out = {}
    for name in program.tensors:
        others = {k: v for k, v in given.items() if k != name}
        out[name] = run_reference(program, others, mode=mode, return_all=True)[name]
    return out


def float_output_bound(op: QLinear, x: np.ndarray, qx: QTensor) -> np.ndarray:
    """(N, O) bound on |simulation - reference| of a float-output QLinear on integer input x.

    The simulation sums K float32 products of dequantized values plus the float32 bias (a
    float32 dot product of K + 1 terms in any order, FMA or not, is within γ_{K+1}·Σ|terms|
    of the exact sum, γ_n ≈ n·2^-24), each term carrying float32 roundings of x̂, ŵ and the
    bias; the reference rounds float32(acc) and one product. So |Δ| <= (K + 8)·2^-24·S_x·S_w[c]
    ·(Σ_k |x_k - Z_x|·|w_ck - Z_w| + |b_c|)."""
    k = op.weight.shape[1]
    w = np.abs(op.weight.astype(np.float64) - op.weight_zero_point)
    terms = np.abs(x.astype(np.float64) - qx.zero_point) @ w.T
    if op.bias is not None:
        terms += np.abs(op.bias.astype(np.float64))
    return (k + 8) * 2.0**-24 * terms * qx.scale * op.weight_scale.astype(np.float64)


def simulated_outputs(qgm: fx.GraphModule, program: IntProgram, x: torch.Tensor
                      ) -> dict[str, np.ndarray]:
    """The simulation's graph outputs (float32) by the names of the program's outputs."""
    with torch.no_grad():
        out = qgm(x)
    values = list(out) if isinstance(out, tuple | list) else [out]
    return {name: v.numpy() for name, v in zip(program.outputs, values, strict=True)}
