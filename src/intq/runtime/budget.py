"""Budgets for ONNX Runtime runs of models intq did not write (``intq eval`` / ``bench``).

A tiny ONNX file can ask for unbounded work: a ``Loop`` of 2^62 iterations, or an ``Expand``
to gigabytes. Three guards, each with a one-line error:

- ``control_flow_nodes``: the nodes that make a graph's work unbounded by its size (``Loop``,
  ``Scan``, ``If``, any node with a sub-graph); the CLI refuses such models (intq's CNNs and
  torch.onnx's have none).
- ``limit_memory(options)``: sessions made with ``options`` allocate from one CPU arena capped
  at ``limits.ort_memory_bytes()`` (``INTQ_ORT_MEMORY_BYTES``).
- ``RunBudget``: each run is stopped (``RunOptions.terminate``, which ONNX Runtime checks
  between nodes and loop iterations) once it has taken ``limits.ort_seconds()``
  (``INTQ_ORT_SECONDS``). One watchdog thread per process polls the running budgets; a run
  costs two attribute writes, so timings are unaffected.
"""

from __future__ import annotations

import threading
import time
import weakref

from intq.errors import IntqError
from intq.limits import ort_memory_bytes, ort_seconds

__all__ = ["BudgetExceeded", "RunBudget", "control_flow_nodes", "limit_memory",
           "memory_exceeded"]

_CONTROL_FLOW = ("Loop", "Scan", "If")
_ARENA = {"bytes": None}
_ARENA_LOCK = threading.Lock()


class BudgetExceeded(IntqError):
    """A run took more time or memory than its budget and was stopped."""


def control_flow_nodes(model) -> list[str]:
    """``"OP 'name'"`` of every node of an ``onnx.ModelProto`` (functions included) that
    loops, branches or carries a sub-graph."""
    import onnx

    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    graph_types = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    return [f"{n.op_type} {n.name!r}" for n in nodes
            if n.op_type in _CONTROL_FLOW or any(a.type in graph_types for a in n.attribute)]


def limit_memory(options) -> int:
    """Let sessions made with ``options`` (``onnxruntime.SessionOptions``) allocate from the
    process's capped CPU arena; return its cap in bytes (fixed at the first call)."""
    import onnxruntime as ort

    with _ARENA_LOCK:
        if _ARENA["bytes"] is None:
            cap = ort_memory_bytes()
            info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0,
                                     ort.OrtMemType.DEFAULT)
            ort.create_and_register_allocator(info, ort.OrtArenaCfg(cap, -1, -1, -1))
            _ARENA["bytes"] = cap
    options.add_session_config_entry("session.use_env_allocators", "1")
    return _ARENA["bytes"]


class RunBudget:
    """Runs of ``what`` (a name for messages), each stopped after ``seconds``
    (default ``limits.ort_seconds()``)."""

    def __init__(self, what: str, seconds: float | None = None):
        import onnxruntime as ort

        self.what = what
        self.seconds = ort_seconds() if seconds is None else seconds
        self.options = ort.RunOptions()
        self.options.log_severity_level = 4
        self.started: float | None = None
        self.stopped = False
        _Watchdog.watch(self)

    def run(self, session, names, feed):
        """``session.run(names, feed)`` within the budget; BudgetExceeded if stopped."""
        self.started = time.monotonic()
        try:
            return session.run(names, feed, self.options)
        except Exception as exc:
            raise self._exceeded(exc) or exc from None
        finally:
            self.started = None

    def _exceeded(self, exc: Exception) -> BudgetExceeded | None:
        if self.stopped:
            return BudgetExceeded(f"{self.what} ran longer than {self.seconds:g} s and was "
                                  "stopped; raise INTQ_ORT_SECONDS if it needs longer")
        return memory_exceeded(self.what, exc)


def memory_exceeded(what: str, exc: Exception) -> BudgetExceeded | None:
    """The one-line error for ONNX Runtime's arena refusing an allocation, else None."""
    text = str(exc)
    if "BFCArena" not in text and "Available memory of" not in text:
        return None
    return BudgetExceeded(f"{what} needs more memory than the limit of "
                          f"{(_ARENA['bytes'] or ort_memory_bytes()) / (1 << 20):.0f} MiB and "
                          "was stopped; raise INTQ_ORT_MEMORY_BYTES if it needs more")


class _Watchdog:
    """One daemon thread that stops the runs that outlive their budget."""

    _budgets: weakref.WeakSet = weakref.WeakSet()
    _thread: threading.Thread | None = None
    _lock = threading.Lock()
    _interval = 0.1

    @classmethod
    def watch(cls, budget: RunBudget) -> None:
        with cls._lock:
            cls._budgets.add(budget)
            if cls._thread is None:
                cls._thread = threading.Thread(target=cls._loop, name="intq-ort-watchdog",
                                               daemon=True)
                cls._thread.start()

    @classmethod
    def _loop(cls) -> None:
        while True:
            time.sleep(cls._interval)
            now = time.monotonic()
            for budget in list(cls._budgets):
                started = budget.started
                if started is not None and now - started > budget.seconds:
                    budget.stopped = True
                    budget.options.terminate = True
