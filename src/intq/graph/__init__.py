"""Graph passes: capture a user's CNN with torch.fx, normalize it, fold BN, fuse (DESIGN.md 4).

    gm = prepare_float_graph(model, example_input)       # capture -> normalize -> fold -> fuse
    gm, report = cross_layer_equalize(gm)                # optional: equal channel ranges

Each pass takes and returns a GraphModule (never editing its input), is idempotent, and
keeps the float function of the model. After `fuse`, conv/linear/add nodes call
`FusedConv2d` / `FusedLinear` / `FusedAdd` modules: the places where quantizers go.
"""

from intq.graph.capture import capture
from intq.graph.equalize import (
    Equalization,
    EqualizedPair,
    cross_layer_equalize,
    relu6_preactivation_peaks,
)
from intq.graph.fold import fold_batchnorm, folded_parameters
from intq.graph.fuse import fuse
from intq.graph.fused import (
    ACTIVATIONS,
    FusedAdd,
    FusedConv2d,
    FusedLinear,
    activation_range,
    apply_activation,
    compose_activations,
)
from intq.graph.kinds import OpKind, graph_summary, op_kind, unsupported_nodes
from intq.graph.normalize import normalize
from intq.graph.prepare import prepare_float_graph

__all__ = [
    # passes
    "capture",
    "normalize",
    "fold_batchnorm",
    "fuse",
    "prepare_float_graph",
    "cross_layer_equalize",
    "relu6_preactivation_peaks",
    "Equalization",
    "EqualizedPair",
    # fused ops
    "ACTIVATIONS",
    "FusedAdd",
    "FusedConv2d",
    "FusedLinear",
    "activation_range",
    "apply_activation",
    "compose_activations",
    # inspection
    "OpKind",
    "graph_summary",
    "op_kind",
    "unsupported_nodes",
    "folded_parameters",
]
