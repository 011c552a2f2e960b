"""The command line's LiteRT (.tflite) helpers: load a model with one-line errors, run it."""

from pathlib import Path

from intq.cli import _common as common
from intq.errors import IntqError

__all__ = ["is_model_file", "tflite_runner", "tflite_session"]


def is_model_file(name: str | Path) -> bool:
    """True for the model files intq runs: .onnx and .tflite."""
    return Path(name).suffix in (".onnx", ".tflite")


def tflite_session(path: Path, *, threads: int = 1, ref_kernels: bool = False):
    """A LiteRtSession of ``path``; a missing or unloadable file is one IntqError line."""
    from intq.runtime.litert import LiteRtSession

    if not path.is_file():
        raise IntqError(f"LiteRT model {path} does not exist")
    try:
        return LiteRtSession(path, threads=threads, ref_kernels=ref_kernels)
    except Exception as exc:  # LiteRT raises ValueError/RuntimeError with multi-line text
        raise IntqError(f"not a valid LiteRT model: {path}: {common.one_line(exc)}") from None


def tflite_runner(path: Path, *, threads: int = 1, ref_kernels: bool = False):
    """(run: float32 NCHW batch -> first output, input shape with None for a dynamic batch)."""
    session = tflite_session(path, threads=threads, ref_kernels=ref_kernels)
    if len(session.outputs) != 1:
        raise IntqError(f"{path} has {len(session.outputs)} outputs; intq needs one (logits)")

    def run(x):
        try:
            return session.run(x)
        except Exception as exc:
            raise IntqError(f"LiteRT failed on {path}: {common.one_line(exc)}") from None

    return run, session.input_shape
