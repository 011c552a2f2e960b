"""The float graph that quantization starts from: capture -> normalize -> fold BN -> fuse."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import fx, nn

from intq.graph.capture import capture
from intq.graph.fold import fold_batchnorm
from intq.graph.fuse import fuse
from intq.graph.normalize import normalize

__all__ = ["prepare_float_graph"]


def prepare_float_graph(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor],
    leaf_modules: Iterable[str | type[nn.Module]] = (),
) -> fx.GraphModule:
    """`fuse(fold_batchnorm(normalize(capture(model, example_input, leaf_modules=...))))`.

    The result computes the same function as `model` in eval mode (float, within float32
    rounding of the BN fold); the model itself is not modified. Use an example batch of
    at least 2 so that the batch dimension is told apart from the others.
    """
    gm = capture(model, example_input, leaf_modules=leaf_modules)
    return fuse(fold_batchnorm(normalize(gm)))
