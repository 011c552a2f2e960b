"""Inputs and comparisons shared by the graph tests (float64 references, no intq calls)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import fx

FASHION_MNIST_TEST = Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")
RTOL = 1e-5


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|, in float64."""
    got, want = got.detach().double(), want.detach().double()
    return ((got - want).abs().max() / want.abs().max()).item()


def fashion_mnist_batch(n: int = 4) -> torch.Tensor:
    """The first `n` Fashion-MNIST test images, normalized, as (n, 1, 28, 28) float32."""
    with gzip.open(FASHION_MNIST_TEST) as f:
        raw = np.frombuffer(f.read(16 + 28 * 28 * n), dtype=np.uint8, offset=16)
    x = torch.from_numpy(raw.astype(np.float32).reshape(n, 1, 28, 28) / 255.0)
    return (x - 0.2860) / 0.3530


def small_inputs() -> list[torch.Tensor]:
    """Random and real 28x28 batches: what every small-net check runs on."""
    g = torch.Generator().manual_seed(7)
    return [torch.randn(3, 1, 28, 28, generator=g), fashion_mnist_batch(4)]


def assert_same_function(
    gm: fx.GraphModule, model: torch.nn.Module, inputs: list[torch.Tensor]
) -> None:
    """gm(x) equals model(x) within 1e-5 relative, for every input batch."""
    model.eval()
    with torch.no_grad():
        for x in inputs:
            err = relative_error(gm(x), model(x))
            assert err <= RTOL, f"relative error {err:.3g} > {RTOL} on input {tuple(x.shape)}"


def call_targets(gm: fx.GraphModule) -> list[object]:
    """The target of every call node (function, method name or module type)."""
    out = []
    for node in gm.graph.nodes:
        if node.op == "call_module":
            out.append(type(gm.get_submodule(node.target)))
        elif node.op in ("call_function", "call_method"):
            out.append(node.target)
    return out
