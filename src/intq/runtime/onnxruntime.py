"""OrtSession: a thin ONNX Runtime (CPU) session for models written by intq.export.onnx.

    session = OrtSession("model.onnx", threads=1)
    y = session.run(x)              # the program's single float output
    every = session.run_all(x)      # program outputs + exported integer tensors (if any)

Integer tensors exported with `intermediates=True` come back in their IntProgram dtype
(int8 tensors run as uint8 = q + 128 inside the model and are shifted back), ready to compare
with run_reference(..., return_all=True). onnxruntime is imported when a session is created.
ONNX Runtime's own log is off (``session_options``); ``budget=True`` runs a model intq did not
write within the time and memory limits of ``intq.runtime.budget``.
"""

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from intq.export.onnx import EXACT_ANY_X86
from intq.runtime.budget import RunBudget, limit_memory

__all__ = ["OrtSession", "cpu_has_vnni", "session_options"]

_QUIET = 4  # ONNX Runtime's log severity "fatal": its errors reach intq as exceptions only


def session_options(threads: int):
    """CPU ``SessionOptions``: ``threads`` intra-op threads, one inter-op thread, and no
    log output of ONNX Runtime's own (errors come back as exceptions, which intq reports)."""
    import onnxruntime as ort

    ort.set_default_logger_severity(_QUIET)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = _QUIET
    return options


def cpu_has_vnni() -> bool | None:
    """True/False when /proc/cpuinfo lists (or lacks) avx512_vnni/avx_vnni/amx_int8; None if
    the flags cannot be read (not Linux)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    if line is None:
        return None
    flags = set(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})


class OrtSession:
    """ONNX Runtime CPU session (default providers) with `threads` intra-op threads."""

    def __init__(self, model: str | os.PathLike | bytes, threads: int = 1, *,
                 budget: bool = False):
        import onnxruntime as ort

        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"OrtSession: threads must be an int >= 1, got {threads!r}")
        options = session_options(threads)
        what = "the ONNX model" if isinstance(model, bytes) else str(model)
        self._budget = None
        if budget:
            limit_memory(options)
            self._budget = RunBudget(what)
        source = model if isinstance(model, bytes) else str(model)
        self._session = ort.InferenceSession(source, options,
                                             providers=["CPUExecutionProvider"])
        meta = self._session.get_modelmeta().custom_metadata_map
        names = [o.name for o in self._session.get_outputs()]
        self.outputs: list[str] = json.loads(meta.get("intq.outputs", json.dumps(names)))
        self.intermediates: list[str] = json.loads(meta.get("intq.intermediates", "[]"))
        self.dtypes: dict[str, str] = json.loads(meta.get("intq.dtypes", "{}"))
        self.inputs: list[str] = [i.name for i in self._session.get_inputs()]
        self.exact_on: str = meta.get("intq.exact_on", EXACT_ANY_X86)
        if self.exact_on != EXACT_ANY_X86 and cpu_has_vnni() is False:
            warnings.warn(f"this model is exact on '{self.exact_on}' only and this CPU has no "
                          f"VNNI: u8·s8 convolutions may saturate; re-export with "
                          f"weight_type='auto'", RuntimeWarning, stacklevel=2)

    def run(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
        """The single program output for `inputs` (an array, or a mapping by input name)."""
        if len(self.outputs) != 1:
            raise ValueError(f"OrtSession.run: the model has outputs {self.outputs}; "
                             f"use run_all")
        return self._run(self.outputs[:1], self._feed(inputs))[0]

    def run_all(self, inputs: np.ndarray | Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Program outputs and exported integer tensors (in IntProgram dtypes) by name."""
        names = self.outputs + self.intermediates
        values = self._run(names, self._feed(inputs))
        out = dict(zip(names, values, strict=True))
        for name in self.intermediates:
            if self.dtypes.get(name) == "int8":
                out[name] = (out[name].astype(np.int16) - 128).astype(np.int8)
        return out

    def _run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self._budget is None:
            return self._session.run(names, feed)
        return self._budget.run(self._session, names, feed)

    def _feed(self, inputs) -> dict[str, np.ndarray]:
        if not isinstance(inputs, Mapping):
            if len(self.inputs) != 1:
                raise ValueError(f"OrtSession: the model has inputs {self.inputs}; pass a "
                                 f"mapping from names to arrays")
            inputs = {self.inputs[0]: inputs}
        return {name: np.ascontiguousarray(value, dtype=np.float32)
                for name, value in inputs.items()}
