"""Synthetic IntPrograms with random integer weights and sensible scales, for tests and benchmarks.

Scales follow a rough real-valued standard deviation σ through the network (input N(0, 1)):
weights get real std gain/sqrt(fan_in), so a conv keeps σ·gain; each activation range covers
±3σ (or [0, 2.5σ] after a ReLU, whose zero point is then qmin). Most integers stay inside the
range while a few percent reach the clamps, which is what these programs are for.
"""

import math

import numpy as np

from intq.convert.builder import ProgramBuilder
from intq.convert.program import ACTIVATION_DTYPES, IntProgram, QTensor

__all__ = ["RandomNet", "mobilenet_v2_like", "random_cnn"]


class RandomNet:
    """A ProgramBuilder plus a σ estimate per tensor and random-weight layer helpers."""

    def __init__(self, seed: int, dtype: str = "uint8", weight_bits: int = 8,
                 per_channel: bool = True):
        self.rng = np.random.default_rng(seed)
        self.b = ProgramBuilder()
        self.dtype = dtype
        self.weight_bits = weight_bits
        self.per_channel = per_channel
        self.sigma: dict[str, float] = {}

    def qtensor(self, sigma: float, relu: bool, relu6: bool = False) -> QTensor:
        """Activation QTensor covering ±3σ, or [0, 2.5σ] with zero point qmin after a ReLU;
        relu6 additionally clamps at half the range (an extra Clip in ONNX)."""
        lo, hi = ACTIVATION_DTYPES[self.dtype]
        if relu:
            scale = 2.5 * sigma / (hi - lo)
            qmax = lo + (hi - lo) // 2 if relu6 else hi
            return QTensor(scale, lo, self.dtype, lo, qmax)
        return QTensor(6 * sigma / (hi - lo), (lo + hi + 1) // 2, self.dtype)

    def input(self, shape: tuple[int | None, ...], name: str = "x") -> str:
        x = self.b.input(name, shape)
        q = self.b.quantize(x, self.qtensor(1.0, relu=False), name=f"{name}_q")
        self.sigma[q] = 1.0
        return q

    def _weights(self, shape: tuple[int, ...], fan_in: int, gain: float):
        wmax = (1 << (self.weight_bits - 1)) - 1
        w = self.rng.integers(-wmax, wmax + 1, size=shape)
        channels = shape[0] if self.per_channel else 1
        w_std = max(wmax / math.sqrt(3), 0.5)
        scale = gain / (math.sqrt(fan_in) * w_std) * np.exp(self.rng.uniform(-0.3, 0.3, channels))
        return w, scale.astype(np.float32)

    def _bias(self, x: str, scale: np.ndarray, out_channels: int, sigma: float) -> np.ndarray:
        real = self.rng.normal(0.0, 0.2 * sigma, out_channels)
        s_in = self.b.qtensor(x).scale
        return np.round(real / (s_in * np.broadcast_to(scale, out_channels))).astype(np.int32)

    def conv(self, x: str, out_channels: int, kernel: int = 3, *, stride: int = 1,
             groups: int = 1, relu: bool = True, relu6: bool = False, padding=None,
             weight_zero_point: int = 0, name: str | None = None) -> str:
        in_channels = self.b.shape(x)[1]
        fan_in = in_channels // groups * kernel * kernel
        gain = 1.4 if relu else 1.0
        w, scale = self._weights((out_channels, in_channels // groups, kernel, kernel),
                                 fan_in, gain)
        sigma = self.sigma[x] * gain
        out = self.qtensor(sigma, relu, relu6)
        y = self.b.conv2d(x, w, scale, out, bias=self._bias(x, scale, out_channels, sigma),
                          stride=stride, padding=kernel // 2 if padding is None else padding,
                          groups=groups, weight_zero_point=weight_zero_point,
                          weight_bits=self.weight_bits, name=name)
        self.sigma[y] = sigma
        return y

    def linear(self, x: str, out_features: int, name: str | None = None, *,
               float_output: bool = False) -> str:
        """An integer-output linear layer, or the float-output form (no output QTensor)."""
        in_features = self.b.shape(x)[1]
        w, scale = self._weights((out_features, in_features), in_features, 1.0)
        sigma = self.sigma[x]
        out = None if float_output else self.qtensor(sigma, relu=False)
        y = self.b.linear(x, w, scale, out, bias=self._bias(x, scale, out_features, sigma),
                          weight_bits=self.weight_bits, name=name)
        self.sigma[y] = sigma
        return y

    def add(self, a: str, b: str, relu: bool = False) -> str:
        sigma = math.hypot(self.sigma[a], self.sigma[b])
        y = self.b.add(a, b, self.qtensor(sigma, relu))
        self.sigma[y] = sigma
        return y

    def shared(self, y: str, x: str) -> str:
        """Record that lossless op output y carries x's σ."""
        self.sigma[y] = self.sigma[x]
        return y

    def pooled(self, y_op, x: str, *args, **kwargs) -> str:
        """Requantizing pool (avg_pool2d / global_avg_pool) keeping σ."""
        y = y_op(x, *args, self.qtensor(self.sigma[x], relu=False), **kwargs)
        self.sigma[y] = self.sigma[x]
        return y

    def build(self, y: str, name: str = "y") -> IntProgram:
        """The program returning `y`: dequantized (named `name`) if it is an integer tensor."""
        return self.b.build([y if self.b.is_float(y) else self.b.dequantize(y, name=name)])


def random_cnn(seed: int, *, dtype: str = "uint8", weight_bits: int = 8,
               per_channel: bool = True, batch: int | None = 2, size: int = 12,
               float_logits: bool = False) -> IntProgram:
    """A small CNN using every integer op: conv (padded, strided, depthwise, ReLU6 clamp,
    nonzero weight zero point), add, concat, max/avg/global pools, pad, reshape, flatten,
    linear. `float_logits`: the classifier is a float-output QLinear followed by a float
    Reshape (what the converter emits for a final linear layer), not a dequantized one."""
    net = RandomNet(seed, dtype, weight_bits, per_channel)
    b = net.b
    x = net.input((batch, 3, size, size))
    c1 = net.conv(x, 8, 3)
    c2 = net.conv(c1, 8, 3, groups=8, relu6=True)
    c3 = net.conv(c2, 8, 1, relu=False)
    r = net.add(c3, net.conv(c1, 8, 1, relu=False), relu=True)
    s = net.conv(r, 12, 3, stride=2, weight_zero_point=1 if weight_bits > 2 else 0)
    m = net.shared(b.max_pool2d(s, 3, stride=1, padding=1), s)
    cat = net.shared(b.concat([s, m]), s)
    p = net.shared(b.pad(cat, (1, 0, 0, 1)), cat)
    a = net.pooled(b.avg_pool2d, p, 2, stride=1)
    d = net.conv(a, 16, 3, stride=2, padding=0)
    g = net.pooled(b.global_avg_pool, d)
    f = net.shared(b.reshape(net.shared(b.flatten(g), g), (-1, 16)), g)
    if float_logits:
        return net.build(b.reshape(net.linear(f, 10, float_output=True), (-1, 10), "y"))
    return net.build(net.linear(f, 10))


def mobilenet_v2_like(seed: int, *, resolution: int = 224, dtype: str = "uint8",
                      weight_bits: int = 8, classes: int = 1000) -> IntProgram:
    """MobileNet-v2 (width 1.0) topology with random weights: inverted residual blocks of
    1x1 expand, 3x3 depthwise, 1x1 project, residual adds, global pool and a classifier."""
    net = RandomNet(seed, dtype, weight_bits)
    x = net.conv(net.input((1, 3, resolution, resolution)), 32, 3, stride=2)
    channels = 32
    for expand, out_c, repeats, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2),
                                           (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                                           (6, 320, 1, 1)]:
        for i in range(repeats):
            hidden = channels * expand
            h = x if expand == 1 else net.conv(x, hidden, 1)
            h = net.conv(h, hidden, 3, stride=stride if i == 0 else 1, groups=hidden)
            h = net.conv(h, out_c, 1, relu=False)
            x = net.add(x, h) if (i > 0 and channels == out_c) else h
            channels = out_c
    x = net.conv(x, 1280, 1)
    g = net.pooled(net.b.global_avg_pool, x)
    return net.build(net.linear(net.shared(net.b.flatten(g), g), classes))
