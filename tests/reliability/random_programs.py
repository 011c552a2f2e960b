"""Random small CNN IntPrograms for fuzzing the exporters: a hypothesis strategy.

``fuzz_cases()`` draws a topology and its parameters: 1-5 blocks, each a conv (any kernel
1-4 x 1-4, stride 1-3, dilation 1-2, asymmetric padding, groups from grouped to depthwise,
ReLU / ReLU6 / none, optional bias and weight zero point), a max or average pool (kernel,
stride, padding, dilation), a constant pad, a residual add, a channel concat, a lookup table
(hardswish, sigmoid, tanh, SiLU), a squeeze-and-excitation gate (global pool, conv, sigmoid
table, QMul with broadcasting), a channel shuffle (reshape, transpose, reshape), a channel or
row slice, or a nearest 2x upsampling; then a head
(global average pool or flatten/reshape, then a linear layer; or the conv map itself). The
activation dtype (uint8/int8), weight bits (2-8), per-channel or per-tensor weight scales, the
input size and batch (fixed or dynamic) are drawn too. Integer weights come from a seeded
numpy generator; scales follow a rough real standard deviation σ through the net (as in
``intq.convert.synthetic``), each output range jittered by up to e^±jitter (default 1.2) so
that some layers saturate hard and others use a few levels only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from intq.convert import IntProgram, ProgramBuilder, QTensor
from intq.convert.program import ACTIVATION_DTYPES

__all__ = ["FuzzCase", "fuzz_cases"]

_MAX_CHANNELS = 12
_BLOCKS = ("conv", "conv", "maxpool", "avgpool", "pad", "add", "concat", "lookup", "gate",
           "shuffle", "slice", "resize")
_FUNCTIONS = {"hardswish": lambda v: v * np.clip(v + 3, 0, 6) / 6,
              "sigmoid": lambda v: 1 / (1 + np.exp(-v)), "tanh": np.tanh,
              "silu": lambda v: v / (1 + np.exp(-v))}
_HEADS = ("gap_linear", "flatten_linear", "reshape_linear", "feature_map")


@dataclass(frozen=True)
class FuzzCase:
    """A program, a float32 input batch for it, and its topology in one line."""

    program: IntProgram
    x: np.ndarray
    description: str


class _Net:
    """ProgramBuilder + hypothesis draws for structure + numpy draws for weights + σ per tensor."""

    def __init__(self, draw, dtype: str, weight_bits: int, per_channel: bool, seed: int,
                 jitter: float):
        self.draw, self.dtype, self.bits, self.per_channel = draw, dtype, weight_bits, per_channel
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)
        self.b = ProgramBuilder()
        self.sigma: dict[str, float] = {}
        self.steps: list[str] = []

    def shape(self, x: str) -> tuple:
        return self.b.shape(x)

    def qtensor(self, sigma: float, activation: str) -> QTensor:
        """Covers ±3σ (or [0, 2.5σ] after a ReLU, zero point qmin), jittered by e^±jitter."""
        lo, hi = ACTIVATION_DTYPES[self.dtype]
        jitter = math.exp(self.draw(st.floats(-self.jitter, self.jitter)))
        if activation == "none":
            return QTensor(6 * sigma * jitter / (hi - lo), (lo + hi + 1) // 2, self.dtype)
        qmax = lo + (hi - lo) // 2 if activation == "relu6" else hi
        return QTensor(2.5 * sigma * jitter / (hi - lo), lo, self.dtype, lo, qmax)

    def weights(self, shape: tuple[int, ...], fan_in: int, gain: float):
        """Full-range b-bit integer weights, float32 scales for a real std of gain/√fan_in."""
        wmax = (1 << (self.bits - 1)) - 1
        w = self.rng.integers(-wmax - 1, wmax + 1, size=shape)
        channels = shape[0] if self.per_channel else 1
        w_std = max(wmax / math.sqrt(3), 0.5)
        spread = np.exp(self.rng.uniform(-0.3, 0.3, channels))
        return w, (gain / (math.sqrt(fan_in) * w_std) * spread).astype(np.float32)

    def bias(self, x: str, scale: np.ndarray, channels: int, sigma: float) -> np.ndarray | None:
        if not self.draw(st.booleans()):
            return None
        real = self.rng.normal(0.0, 0.3 * sigma, channels)
        s_in = self.b.qtensor(x).scale
        return np.round(real / (s_in * np.broadcast_to(scale, channels))).astype(np.int32)

    def weight_zero_point(self) -> int:
        if self.bits == 2 or not self.draw(st.booleans()):
            return 0
        return self.draw(st.integers(-2, 2))

    def conv(self, x: str, out_channels: int | None = None, *, same: bool = False,
             out: QTensor | None = None) -> str:
        """A conv; ``same``: stride 1 and 'same' padding (odd kernel), for residual branches."""
        d = self.draw
        _, cin, h, w = self.shape(x)
        groups = d(st.sampled_from([g for g in range(1, cin + 1) if cin % g == 0]))
        if out_channels is None:
            out_channels = groups * d(st.integers(1, max(1, _MAX_CHANNELS // groups)))
        elif out_channels % groups:
            groups = 1
        if same:
            kh = kw = d(st.sampled_from([1, 3]))
            stride, dilation, padding = (1, 1), (1, 1), (kh // 2,) * 4
        else:
            stride = (d(st.integers(1, 3)), d(st.integers(1, 3)))
            padding = tuple(d(st.integers(0, 2)) for _ in range(4))
            kh, dh = _fit(d(st.integers(1, 4)), d(st.integers(1, 2)), h + padding[0] + padding[2])
            kw, dw = _fit(d(st.integers(1, 4)), d(st.integers(1, 2)), w + padding[1] + padding[3])
            dilation = (dh, dw)
        activation = d(st.sampled_from(["none", "relu", "relu6"])) if out is None else "none"
        gain = 1.0 if activation == "none" else 1.4
        fan_in = cin // groups * kh * kw
        weight, scale = self.weights((out_channels, cin // groups, kh, kw), fan_in, gain)
        sigma = self.sigma[x] * gain
        out = self.qtensor(sigma, activation) if out is None else out
        y = self.b.conv2d(x, weight, scale, out, bias=self.bias(x, scale, out_channels, sigma),
                          stride=stride, padding=padding, dilation=dilation, groups=groups,
                          weight_zero_point=self.weight_zero_point(), weight_bits=self.bits)
        self.sigma[y] = sigma
        self.steps.append(f"conv{cin}->{out_channels} k{kh}x{kw} s{stride} d{dilation} "
                          f"p{padding} g{groups} {activation}")
        return y

    def maxpool(self, x: str) -> str:
        d = self.draw
        _, _, h, w = self.shape(x)
        (kh, dh), (kw, dw) = (_fit(d(st.integers(1, 3)), d(st.integers(1, 2)), size)
                              for size in (h, w))
        kernel, dilation = (kh, kw), (dh, dw)
        span = [(k - 1) * dl + 1 for k, dl in zip(kernel, dilation, strict=True)]
        padding = tuple(d(st.integers(0, span[i % 2] - 1)) for i in range(4))
        stride = (d(st.integers(1, 3)), d(st.integers(1, 3)))
        y = self.b.max_pool2d(x, kernel, stride=stride, padding=padding, dilation=dilation)
        self.sigma[y] = self.sigma[x]
        self.steps.append(f"maxpool k{kernel} s{stride} d{dilation} p{padding}")
        return y

    def avgpool(self, x: str) -> str:
        d = self.draw
        _, _, h, w = self.shape(x)
        padding = tuple(d(st.integers(0, 1)) for _ in range(4))
        kernel = (_fit(d(st.integers(1, 3)), 1, h + padding[0] + padding[2])[0],
                  _fit(d(st.integers(1, 3)), 1, w + padding[1] + padding[3])[0])
        padding = tuple(min(p, kernel[i % 2] - 1) for i, p in enumerate(padding))
        stride = (d(st.integers(1, 3)), d(st.integers(1, 3)))
        y = self.b.avg_pool2d(x, kernel, self.qtensor(self.sigma[x], "none"), stride=stride,
                              padding=padding)
        self.sigma[y] = self.sigma[x]
        self.steps.append(f"avgpool k{kernel} s{stride} p{padding}")
        return y

    def pad(self, x: str) -> str:
        padding = tuple(self.draw(st.integers(0, 2)) for _ in range(4))
        y = self.b.pad(x, padding)
        self.sigma[y] = self.sigma[x]
        self.steps.append(f"pad {padding}")
        return y

    def add(self, x: str) -> str:
        branch = self.conv(x, self.shape(x)[1], same=True)
        relu = self.draw(st.booleans())
        sigma = math.hypot(self.sigma[x], self.sigma[branch])
        y = self.b.add(x, branch, self.qtensor(sigma, "relu" if relu else "none"))
        self.sigma[y] = sigma
        self.steps.append(f"add{' relu' if relu else ''}")
        return y

    def concat(self, x: str) -> str:
        qx = self.b.qtensor(x)
        shared = QTensor(qx.scale, qx.zero_point, qx.dtype)  # concat needs equal qparams
        branch = self.conv(x, same=True, out=shared)
        y = self.b.concat([x, branch])
        self.sigma[y] = self.sigma[x]
        self.steps.append("concat")
        return y

    def lookup(self, x: str) -> str:
        """A table of an elementwise function, computed from the 256 input codes."""
        name = self.draw(st.sampled_from(sorted(_FUNCTIONS)))
        qx = self.b.qtensor(x)
        low = ACTIVATION_DTYPES[qx.dtype][0]
        real = _FUNCTIONS[name]((np.arange(low, low + 256) - qx.zero_point) * qx.scale)
        sigma = max(float(np.abs(real).max()) / 3, 1e-3)
        out = self.qtensor(sigma, "none")
        table = np.clip(np.round(real / out.scale) + out.zero_point, out.qmin, out.qmax)
        y = self.b.lookup(x, table.astype(np.int32), out, function=name)
        self.sigma[y] = sigma
        self.steps.append(f"lookup {name}")
        return y

    def gate(self, x: str) -> str:
        """x · sigmoid(conv(global pool(x))): QMul broadcasting (N, C, 1, 1) over (N, C, H, W)."""
        pooled = self.b.global_avg_pool(x, self.qtensor(self.sigma[x], "none"))
        self.sigma[pooled] = self.sigma[x]
        score = self.lookup(self.conv(pooled, self.shape(x)[1], same=True))
        self.steps.pop()
        y = self.b.mul(x, score, self.qtensor(self.sigma[x] / 2, "none"))
        self.sigma[y] = self.sigma[x] / 2
        self.steps.append("gate")
        return y

    def shuffle(self, x: str) -> str:
        _, c, h, w = self.shape(x)
        if c % 2:
            return x
        y = self.b.reshape(x, (-1, 2, c // 2, h, w))
        y = self.b.reshape(self.b.transpose(y, (0, 2, 1, 3, 4)), (-1, c, h, w))
        self.sigma[y] = self.sigma[x]
        self.steps.append("shuffle")
        return y

    def slice(self, x: str) -> str:
        shape = self.shape(x)
        axis = self.draw(st.integers(1, 3))
        if shape[axis] < 2:
            return x
        start = self.draw(st.integers(0, shape[axis] - 2))
        stop = self.draw(st.integers(start + 1, shape[axis]))
        y = self.b.slice(x, axis, start, stop, self.draw(st.integers(1, 2)))
        self.sigma[y] = self.sigma[x]
        self.steps.append(f"slice axis {axis} {start}:{stop}")
        return y

    def resize(self, x: str) -> str:
        if max(self.shape(x)[2:]) > 8:
            return x
        y = self.b.resize_nearest(x, (2, 2))
        self.sigma[y] = self.sigma[x]
        self.steps.append("resize 2x")
        return y

    def head(self, x: str) -> str:
        _, c, h, w = self.shape(x)
        kind = self.draw(st.sampled_from(_HEADS if c * h * w <= 400 else _HEADS[:1]))
        self.steps.append(kind)
        if kind == "feature_map":
            return x
        if kind == "gap_linear":
            g = self.b.global_avg_pool(x, self.qtensor(self.sigma[x], "none"))
            self.sigma[g] = self.sigma[x]
            f = self.b.flatten(g)
        elif kind == "flatten_linear":
            f = self.b.flatten(x)
        else:
            f = self.b.reshape(x, (-1, c * h * w))
        self.sigma[f] = self.sigma[g if kind == "gap_linear" else x]
        return self.linear(f, self.draw(st.integers(1, 10)))

    def linear(self, x: str, out_features: int) -> str:
        in_features = self.shape(x)[1]
        weight, scale = self.weights((out_features, in_features), in_features, 1.0)
        sigma = self.sigma[x]
        y = self.b.linear(x, weight, scale, self.qtensor(sigma, "none"),
                          bias=self.bias(x, scale, out_features, sigma),
                          weight_zero_point=self.weight_zero_point(), weight_bits=self.bits)
        self.sigma[y] = sigma
        return y


def _fit(kernel: int, dilation: int, size: int) -> tuple[int, int]:
    """(kernel, dilation) whose span (kernel - 1)·dilation + 1 fits ``size`` pixels: as drawn
    if it fits, else dilation 1 and the kernel cut to ``size``."""
    if (kernel - 1) * dilation + 1 <= size:
        return kernel, dilation
    return min(kernel, size), 1


@st.composite
def fuzz_cases(draw, jitter: float = 1.2) -> FuzzCase:
    """A random small CNN IntProgram and an input batch for it (see the module docstring)."""
    dtype = draw(st.sampled_from(["uint8", "int8"]))
    bits = draw(st.integers(2, 8))
    per_channel = draw(st.booleans())
    net = _Net(draw, dtype, bits, per_channel, draw(st.integers(0, 2**32 - 1)), jitter)
    batch = draw(st.integers(1, 3))
    dynamic = draw(st.booleans())
    shape = (batch, draw(st.integers(1, 6)), draw(st.integers(3, 12)), draw(st.integers(3, 12)))
    x = net.b.input("x", (None, *shape[1:]) if dynamic else shape)
    lo, hi = ACTIVATION_DTYPES[dtype]
    q = net.b.quantize(x, QTensor(6 / (hi - lo), (lo + hi + 1) // 2, dtype))
    net.sigma[q] = 1.0
    for _ in range(draw(st.integers(1, 5))):
        q = getattr(net, draw(st.sampled_from(_BLOCKS)))(q)
    y = net.head(q)
    program = net.b.build([net.b.dequantize(y, name="y")])
    amplitude = draw(st.sampled_from([0.5, 1.0, 3.0]))
    inputs = net.rng.standard_normal(shape).astype(np.float32) * np.float32(amplitude)
    description = (f"{dtype} w{bits} {'per-channel' if per_channel else 'per-tensor'} input "
                   f"{shape}{' dynamic' if dynamic else ''}: " + " | ".join(net.steps))
    return FuzzCase(program, inputs, description)
