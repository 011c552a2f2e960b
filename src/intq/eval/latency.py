"""Latency of ONNX models in ONNX Runtime: median and spread over interleaved repeats.

    a, b = ort_latency(["model.int8.onnx", "model.float.onnx"], threads=1, repeats=50)
    speedup(a, b)          # b.median_ms / a.median_ms: how many times faster a is than b

Each model gets its own CPU session (``threads`` intra-op threads, one inter-op thread) and
one seeded standard-normal input (dynamic batch dimension -> ``batch``). After ``warmup``
untimed rounds, every timed round runs each model once, starting at a different model each
round, so that load changes on a shared machine hit all models alike. The statistics of a
model are over its ``repeats`` wall times (``time.perf_counter``): median, 10th and 90th
percentiles (linear interpolation between order statistics, numpy's default) and minimum.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from intq.runtime.budget import limit_memory
from intq.runtime.onnxruntime import session_options

__all__ = [
    "LatencyStats",
    "latency_stats",
    "measure_latency",
    "onnx_feed",
    "ort_latency",
    "ort_session",
    "speedup",
]

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64,
                "tensor(float16)": np.float16}


@dataclass(frozen=True)
class LatencyStats:
    """Wall time of one call in milliseconds over ``repeats`` timed calls."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    min_ms: float
    repeats: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Median, 10th/90th percentiles and minimum of call times given in seconds."""
    times = np.asarray(seconds, dtype=np.float64) * 1e3
    if times.ndim != 1 or times.size == 0 or not np.isfinite(times).all() or (times < 0).any():
        raise ValueError(f"latency_stats: need a non-empty list of finite times >= 0, "
                         f"got {list(seconds)[:5]}")
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return LatencyStats(float(median), float(p10), float(p90), float(times.min()), times.size)


def measure_latency(calls: Sequence[Callable[[], object]], *, repeats: int = 50,
                    warmup: int = 5,
                    clock: Callable[[], float] = time.perf_counter) -> list[LatencyStats]:
    """Time each of ``calls`` ``repeats`` times, interleaved in rotating order after
    ``warmup`` untimed rounds; one LatencyStats per call, in order."""
    if not calls:
        raise ValueError("measure_latency: give at least one call")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"measure_latency: need repeats >= 1 and warmup >= 0, "
                         f"got {repeats} and {warmup}")
    for _ in range(warmup):
        for call in calls:
            call()
    times: list[list[float]] = [[] for _ in calls]
    for round_index in range(repeats):
        for offset in range(len(calls)):
            i = (round_index + offset) % len(calls)
            start = clock()
            calls[i]()
            times[i].append(clock() - start)
    return [latency_stats(t) for t in times]


def speedup(fast: LatencyStats, slow: LatencyStats) -> float:
    """``slow.median_ms / fast.median_ms`` (> 1 when ``fast`` is faster)."""
    if fast.median_ms <= 0:
        raise ValueError("speedup: the median latency is 0; time more work per call")
    return slow.median_ms / fast.median_ms


def ort_session(model: str | os.PathLike | bytes, threads: int = 1, *,
                budget: bool = False):
    """An onnxruntime CPU InferenceSession with ``threads`` intra-op threads, quiet; with
    ``budget``, its memory capped (``runtime.budget.limit_memory``)."""
    import onnxruntime as ort

    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"ort_session: threads must be an int >= 1, got {threads!r}")
    options = session_options(threads)
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if budget:
        limit_memory(options)
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def onnx_feed(session, batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal inputs for every input of ``session``: a dynamic first dimension (a
    symbol or a negative size) becomes ``batch``; a first dimension 0 or any other dynamic
    dimension raises ValueError."""
    rng = np.random.default_rng(seed)
    feed = {}
    for arg in session.get_inputs():
        if arg.type not in _NUMPY_TYPES:
            raise ValueError(f"input {arg.name!r} has type {arg.type}; only float inputs "
                             f"({', '.join(_NUMPY_TYPES)}) can be generated")
        if arg.shape and arg.shape[0] == 0:
            raise ValueError(f"input {arg.name!r} has shape {arg.shape}: a batch of 0 "
                             "samples, nothing to time; export it with a batch >= 1")
        shape = [batch if i == 0 and not (isinstance(d, int) and d > 0) else d
                 for i, d in enumerate(arg.shape)]
        dynamic = [i for i, d in enumerate(shape) if not (isinstance(d, int) and d > 0)]
        if dynamic:
            raise ValueError(f"input {arg.name!r} has shape {arg.shape}: dynamic axis "
                             f"{dynamic[0]} besides the batch; export it with a fixed size")
        feed[arg.name] = rng.standard_normal(shape).astype(_NUMPY_TYPES[arg.type])
    return feed


def ort_latency(models: Sequence[str | os.PathLike | bytes], *, threads: int = 1,
                repeats: int = 50, warmup: int = 5, batch: int = 1,
                seed: int = 0) -> list[LatencyStats]:
    """Latency of each ONNX model (path or bytes) in ONNX Runtime, measured interleaved."""
    sessions = [ort_session(m, threads) for m in models]
    calls = []
    for session in sessions:
        feed = onnx_feed(session, batch, seed)
        calls.append(lambda s=session, f=feed: s.run(None, f))
    return measure_latency(calls, repeats=repeats, warmup=warmup)
