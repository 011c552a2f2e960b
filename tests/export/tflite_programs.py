"""Small IntPrograms for the LiteRT writer tests: every op and padding form it maps."""

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
