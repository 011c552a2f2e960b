"""QAT checkpoints: the training state after a step, as one safetensors file (never pickle).

The state is the QAT graph's ``state_dict`` (weights, BN statistics, quantizer ranges and
qparams, switches) under ``model.``, the optimizer's per-parameter state (SGD's momentum
buffer, Adam's moments and step count) under ``optimizer.<i>.<name>`` (``i``: the parameter's
index in ``parameters()``; ``momentum.<i>``, the SGD momentum of older checkpoints, is read
too) and the number of steps done under ``step``. With
the seeded batch order and the step-indexed schedule and learning rate (``intq.qat.train``),
that is all a run needs to continue exactly where it stopped. Files are written to a
temporary name and renamed, so a checkpoint on disk is always complete; ``metadata`` (str to
str) records the settings of the run, for a resume to check that it continues the same run.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from intq.errors import IntqError

__all__ = ["load_checkpoint", "restore_training_state", "save_checkpoint", "training_state"]

_MODEL, _OPTIMIZER, _MOMENTUM, _STEP = "model.", "optimizer.", "momentum.", "step"


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                   step: int) -> dict[str, torch.Tensor]:
    """Copies of ``model``'s state, ``optimizer``'s per-parameter tensors and ``step``."""
    state = {_MODEL + k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for i, param in enumerate(_params(optimizer)):
        for name, value in optimizer.state.get(param, {}).items():
            if isinstance(value, torch.Tensor):
                state[f"{_OPTIMIZER}{i}.{name}"] = value.detach().clone().contiguous()
    state[_STEP] = torch.tensor(step, dtype=torch.int64)
    return state


def restore_training_state(state: dict[str, torch.Tensor], model: nn.Module,
                           optimizer: torch.optim.Optimizer) -> int:
    """Load ``state`` (from ``training_state``) into ``model`` and ``optimizer``; the step."""
    if _STEP not in state:
        raise IntqError("the checkpoint holds no QAT training state (no 'step')")
    weights = {k[len(_MODEL):]: v for k, v in state.items() if k.startswith(_MODEL)}
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise IntqError(f"the checkpoint does not fit the QAT model: {first}") from None
    params = _params(optimizer)
    for key, value in state.items():
        if key.startswith(_MOMENTUM):
            index, name = int(key[len(_MOMENTUM):]), "momentum_buffer"
        elif key.startswith(_OPTIMIZER):
            position, name = key[len(_OPTIMIZER):].split(".", 1)
            index = int(position)
        else:
            continue
        scalar = value.dim() == 0 and name == "step"
        if index >= len(params) or not (scalar or params[index].shape == value.shape):
            raise IntqError(f"the checkpoint's optimizer state {name} of parameter {index} "
                            "does not fit the QAT model (or was written by another optimizer)")
        optimizer.state[params[index]][name] = value.clone()
    return int(state[_STEP])


def save_checkpoint(state: dict[str, torch.Tensor], path: str | Path,
                    metadata: dict[str, str] | None = None) -> Path:
    """Write ``state`` to ``path`` (.safetensors) atomically: temp file, fsync, rename."""
    from safetensors.torch import save

    path = Path(path)
    data = save(state, metadata=metadata)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and metadata of a checkpoint written by ``save_checkpoint``."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise IntqError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise IntqError(f"checkpoint {path} is not a valid safetensors file: {first}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]
