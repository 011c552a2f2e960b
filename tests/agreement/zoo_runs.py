"""One zoo model quantized, converted and run three ways on real images: the simulation, the
reference interpreter (both modes) and ONNX Runtime, every integer tensor and the float
logits kept.

Fashion-MNIST models use their shipped weights when the file exists; otherwise a seeded
random initialization whose BatchNorm statistics are re-estimated on 256 real images (one
forward pass in train mode, cumulative average), so that every layer sees realistic,
normalized activations without any training. EfficientNet-Lite0 has its published weights.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import fx, nn

from intq.convert.from_graph import convert_to_program
from intq.convert.program import IntProgram
from intq.export import export_onnx
from intq.ptq import quantize
from intq.runtime import OrtSession, run_reference
from intq.zoo import MODEL_ZOO, load_fashion_mnist, load_model
from intq.zoo.natural_images import load_natural_images
from intq.zoo.registry import WEIGHTS_DIR

from .simulated import locally_recomputed, simulated_integers, simulated_outputs

LITE0_NORMALIZATION = MODEL_ZOO["efficientnet-lite0"].normalization

FMNIST_MODELS = tuple(n for n, m in MODEL_ZOO.items() if m.dataset == "fashion-mnist")
EFFICIENTNET = "efficientnet-lite0"
F32, FIXED = "float32_half_even", "fixed_point"


@dataclass(frozen=True)
class ZooRun:
    """Everything one model computes on ``x``: integer tensors and float outputs by program
    name (``sim`` holds the simulation's integers, ``sim_outputs`` its float outputs)."""

    name: str
    weights: str
    qgm: fx.GraphModule
    program: IntProgram
    x: np.ndarray
    sim: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]
    fixed: dict[str, np.ndarray]
    ort: dict[str, np.ndarray]
    sim_outputs: dict[str, np.ndarray]

    def integers(self, run: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {n: run[n] for n in self.program.tensors}

    def local(self, given: dict[str, np.ndarray], mode: str) -> dict[str, np.ndarray]:
        """Every integer tensor recomputed in ``mode`` from the ``given`` inputs of its op."""
        return locally_recomputed(self.program, self.integers(given), self.x, mode)


def _reestimate_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # cumulative average: one batch gives its exact statistics
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


def _fmnist_model(name: str, images: torch.Tensor) -> tuple[nn.Module, str]:
    entry = MODEL_ZOO[name]
    if entry.weights is not None and (WEIGHTS_DIR / entry.weights).is_file():
        return load_model(name), "shipped"
    torch.manual_seed(0)
    return _reestimate_batchnorm(entry.build(), images), "random init, BN re-estimated"


def zoo_run(name: str) -> ZooRun:
    """Quantize (default recipe), convert and run model ``name``: 16 Fashion-MNIST test images
    (calibrated on 128 others), or 2 natural images for EfficientNet (calibrated on 8)."""
    if name == EFFICIENTNET:
        model, weights = load_model(name), "published"
        calib = load_natural_images("calibration", 8, LITE0_NORMALIZATION).x
        x = load_natural_images("evaluation", 2, LITE0_NORMALIZATION).x
    else:
        test = load_fashion_mnist("test").x
        model, weights = _fmnist_model(name, test[5000:5256])
        calib, x = test[1000:1128], test[:16]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*near-zero weights", UserWarning)  # dead channels
        qgm = quantize(model, calib, batch_size=64, progress=False)
    program = convert_to_program(qgm, tuple(x.shape[1:]))
    xn = x.numpy()
    session = OrtSession(export_onnx(program, intermediates=True).SerializeToString())
    return ZooRun(
        name, weights, qgm, program, xn, simulated_integers(qgm, program, x),
        run_reference(program, xn, mode=F32, return_all=True),
        run_reference(program, xn, mode=FIXED, return_all=True), session.run_all(xn),
        simulated_outputs(qgm, program, x))


@dataclass(frozen=True)
class Diff:
    """|a - b| in LSB over a set of integer tensors."""

    values: int
    differing: int
    max_lsb: int
    mean_lsb: float

    @property
    def fraction(self) -> float:
        return self.differing / self.values

    def __str__(self) -> str:
        return (f"{self.differing}/{self.values} differ ({self.fraction:.2e}), "
                f"max {self.max_lsb} LSB, mean {self.mean_lsb:.3f} LSB")


def diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray], names) -> Diff:
    d = np.concatenate([np.abs(a[n].astype(np.int64) - b[n].astype(np.int64)).ravel()
                        for n in names])
    return Diff(d.size, int((d > 0).sum()), int(d.max()), float(d.mean()))
