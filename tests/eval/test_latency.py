"""Latency measurement: statistics against a hand-written reference, the interleaved order
and warm-up with a fake clock, generated ONNX inputs, and a real ONNX Runtime run."""

from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from intq.eval.latency import (
    LatencyStats,
    latency_stats,
    measure_latency,
    onnx_feed,
    ort_latency,
    ort_session,
    speedup,
)


def _percentile(values, q):
    """Linear interpolation between order statistics at rank q/100·(n-1), in Fractions."""
    ordered = sorted(Fraction(v) for v in values)
    rank = Fraction(q, 100) * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@pytest.mark.parametrize("ms", [[5], [3, 1, 2], [1, 2, 3, 4], [9, 1, 1, 7, 3, 3, 12, 5, 8, 2, 6]])
def test_latency_stats_match_the_reference(ms):
    stats = latency_stats([m / 1000 for m in ms])
    assert stats.repeats == len(ms) and stats.min_ms == pytest.approx(min(ms), rel=1e-12)
    for got, q in ((stats.p10_ms, 10), (stats.median_ms, 50), (stats.p90_ms, 90)):
        assert got == pytest.approx(float(_percentile(ms, q)), rel=1e-12)


@pytest.mark.parametrize("bad", [[], [float("nan")], [-1.0], [[1.0, 2.0]]])
def test_latency_stats_refuse_bad_times(bad):
    with pytest.raises(ValueError, match="finite times"):
        latency_stats(bad)


class FakeClock:
    """A clock that only moves when a call runs: call k takes ``durations[k]`` seconds."""

    def __init__(self):
        self.now = 0.0
        self.log: list[str] = []

    def __call__(self):
        return self.now

    def call(self, name: str, seconds: float):
        def run():
            self.log.append(name)
            self.now += seconds

        return run


def test_measure_latency_interleaves_in_rotating_order_after_warmup():
    clock = FakeClock()
    calls = [clock.call("a", 0.004), clock.call("b", 0.001), clock.call("c", 0.002)]
    a, b, c = measure_latency(calls, repeats=4, warmup=2, clock=clock)
    warm, timed = clock.log[:6], clock.log[6:]
    assert warm == ["a", "b", "c"] * 2
    assert timed == list("abc" "bca" "cab" "abc")
    assert (a.median_ms, b.median_ms, c.median_ms) == pytest.approx((4, 1, 2))
    assert a.repeats == b.repeats == c.repeats == 4
    assert speedup(b, a) == pytest.approx(4.0) and speedup(a, b) == pytest.approx(0.25)


def test_measure_latency_refuses_bad_arguments():
    with pytest.raises(ValueError, match="at least one call"):
        measure_latency([])
    with pytest.raises(ValueError, match="repeats >= 1"):
        measure_latency([lambda: None], repeats=0)
    with pytest.raises(ValueError, match="median latency is 0"):
        speedup(LatencyStats(0.0, 0.0, 0.0, 0.0, 1), LatencyStats(1.0, 1.0, 1.0, 1.0, 1))


def _matmul_model(shape, size=8, elem=TensorProto.FLOAT) -> bytes:
    """y = x @ W for an input of ``shape`` (strings are dynamic dimensions)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [size, size], np.eye(size).ravel().tolist())
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT),
         helper.make_node("MatMul", ["xf", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*shape[:-1], size])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_onnx_feed_fills_the_batch_and_refuses_other_dynamic_axes():
    feed = onnx_feed(ort_session(_matmul_model(["n", 3, 8])), batch=5, seed=1)
    assert feed["x"].shape == (5, 3, 8) and feed["x"].dtype == np.float32
    again = onnx_feed(ort_session(_matmul_model(["n", 3, 8])), batch=5, seed=1)
    assert np.array_equal(feed["x"], again["x"])
    assert onnx_feed(ort_session(_matmul_model([2, 8])), batch=5)["x"].shape == (2, 8)
    with pytest.raises(ValueError, match="dynamic axis 1 besides the batch"):
        onnx_feed(ort_session(_matmul_model(["n", "rows", 8])))
    with pytest.raises(ValueError, match="only float inputs"):
        onnx_feed(ort_session(_matmul_model(["n", 8], elem=TensorProto.INT64)))


def test_ort_latency_times_each_model():
    small, large = _matmul_model(["n", 8]), _matmul_model(["n", 256], size=256)
    stats = ort_latency([small, large], repeats=5, warmup=1, batch=64)
    assert [s.repeats for s in stats] == [5, 5]
    for s in stats:
        assert 0 < s.min_ms <= s.p10_ms <= s.median_ms <= s.p90_ms
    with pytest.raises(ValueError, match="threads must be an int >= 1"):
        ort_session(small, threads=0)
