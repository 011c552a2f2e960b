"""Small IntPrograms and torch models for the LiteRT writer tests: every op and padding form
it maps."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from intq.convert import QTensor
from intq.convert.program import IntProgram
from intq.convert.synthetic import RandomNet


def tflite_cnn(seed: int, dtype: str = "int8", *, float_logits: bool = True,
               batch: int | None = None) -> IntProgram:
    """Conv (SAME, VALID, explicit-pad and SAME-asymmetric padding, depthwise, grouped),
    ReLU6 clamps TFLite derives and one it cannot (half range: MINIMUM), add, concat, max
    pool (SAME-like padding and explicit), pad, avg pool, global pool, a flatten of an 8x3x3
    tensor (TRANSPOSE to NCHW), reshapes, an integer linear and a float-output one."""
    net = RandomNet(seed, dtype, 8, True)
    b = net.b
    x = net.input((batch, 3, 12, 12))
    c1 = net.conv(x, 8, 3)
    c2 = net.conv(c1, 8, 3, groups=8, relu6=True)
    c3 = net.conv(c2, 8, 1, relu=False)
    r = net.add(c3, net.conv(c1, 8, 1, relu=False), relu=True)
    g = net.conv(r, 8, 3, groups=2, padding=(0, 0, 2, 2))
    s = net.conv(g, 12, 3, stride=2)
    m = net.shared(b.max_pool2d(s, 3, stride=1, padding=1), s)
    m2 = net.shared(b.max_pool2d(s, 3, stride=2, padding=(1, 1, 1, 1)), s)
    cat = net.shared(b.concat([s, m]), s)
    p = net.shared(b.pad(cat, (1, 0, 0, 1)), cat)
    a = net.pooled(b.avg_pool2d, p, 2, stride=1)
    d = net.conv(a, 8, 3, stride=2, padding=(0, 0, 1, 1))
    e = net.conv(m2, 8, 3, stride=1, padding=1)
    flat = net.shared(b.flatten(e), e)
    h = net.linear(flat, 16)
    gp = net.pooled(b.global_avg_pool, d)
    f = net.shared(b.reshape(net.shared(b.flatten(gp), gp), (-1, 8)), gp)
    joined = net.shared(b.concat([f, h], axis=1), h)
    if float_logits:
        return net.build(b.reshape(net.linear(joined, 10, float_output=True), (-1, 10), "y"))
    return net.build(net.linear(joined, 10))


def tflite_modern(seed: int, dtype: str = "int8") -> IntProgram:
    """The ops of modern CNNs: lookup tables (one shifted, one a gate), a squeeze-and-excitation
    QMul (a (N, C, 1, 1) gate against (N, C, H, W), fused ReLU), a channel shuffle (reshape to
    5-D, transpose, reshape), channel/row/column slices (steps 1, 2, 3), a nearest resize by
    (2, 3), and 4-D transposes there and back, with a dynamic batch."""
    net = RandomNet(seed, dtype, 8, True)
    b = net.b
    lo = -128 if dtype == "int8" else 0
    x = net.input((None, 3, 8, 8))
    c = net.conv(x, 8, 3, relu=False)
    qc = b.qtensor(c)
    table = np.clip(np.arange(256) // 2 + lo + 20, lo, lo + 255)
    lk = net.shared(b.lookup(c, table, QTensor(qc.scale * 2, lo + 30, dtype), "test"), c)
    gp = net.pooled(b.global_avg_pool, lk)
    gate = b.lookup(gp, np.arange(256) + lo, QTensor(1 / 255, lo, dtype), "identity")
    m = net.shared(b.mul(lk, gate, QTensor(qc.scale * 2, lo + 30, dtype, qmin=lo + 30)), c)
    r5 = net.shared(b.reshape(m, (-1, 2, 4, 8, 8)), m)
    t = net.shared(b.transpose(r5, (0, 2, 1, 3, 4)), m)
    shuffled = net.shared(b.reshape(t, (-1, 8, 8, 8)), m)
    s1 = net.shared(b.slice(shuffled, 1, 2, 7), m)
    s2 = net.shared(b.slice(s1, 2, 1, 8, 2), m)
    s3 = net.shared(b.slice(s2, 3, 0, 7, 3), m)
    up = net.shared(b.resize_nearest(s3, (2, 3)), m)
    t4 = net.shared(b.transpose(up, (0, 2, 3, 1)), m)
    back = net.shared(b.transpose(t4, (0, 3, 1, 2)), m)
    return net.build(net.conv(back, 4, 1))


class SqueezeExcite(nn.Module):
    """MobileNetV3's block: hardswish, global pool -> 1x1 convs -> hardsigmoid -> gate mul,
    plus sigmoid, SiLU, GELU and tanh tables (EfficientNet, GhostNet)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc1, self.fc2 = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.out = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        x = F.hardswish(self.conv(x))
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        y = self.out(x * s)
        return torch.sigmoid(y) * y + F.gelu(torch.tanh(F.silu(y)))


class ShuffleUpsample(nn.Module):
    """ShuffleNetV2 / HRNet index ops: chunk, channel shuffle, split, slices (steps 1 and 2),
    nearest upsampling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.branch = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Conv2d(8, 6, 1)

    def forward(self, x):
        x = self.conv(x)
        a, b = x.chunk(2, dim=1)
        x = torch.cat((a, self.branch(b)), dim=1)
        n, c, h, w = x.size()
        x = x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, -1, h, w)
        first, rest = torch.split(x, [3, 5], dim=1)
        y = torch.cat([x[:, :5], first], 1)
        y = F.interpolate(F.max_pool2d(y, 2), scale_factor=2, mode="nearest")
        z = self.head(torch.cat([y[:, :3], rest], 1))
        return z[:, 1:][:, :, ::2][:, :, :, 1::2]
