"""Load the model a user names: a zoo name, ``file.py:factory`` or ``package.module:factory``.

    loaded = load_model_spec("efficientnet-lite0")                  # published weights
    loaded = load_model_spec("nets/small.py:build", weights="w.pt")  # factory + state dict
    loaded.model, loaded.input_shape, loaded.dataset                 # shape/dataset: zoo only

A factory is called with no arguments and must return an ``nn.Module``; ``.py`` files are
loaded with ``importlib.util.spec_from_file_location`` (the file's code runs, as the user
asked). Weights files are never unpickled beyond plain tensors: ``.safetensors`` through
``safetensors.torch.load_file``, anything else through ``torch.load(weights_only=True)``; a
checkpoint that needs code is refused. Every failure is one ``IntqError`` line.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from intq.errors import IntqError
from intq.torchvision_compat import import_torchvision
from intq.zoo.registry import MODEL_ZOO, ZooModel, load_model

__all__ = [
    "LoadedModel",
    "apply_state_dict",
    "load_factory",
    "load_model_spec",
    "read_state_dict",
    "spec_label",
]

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model")
_SHOWN_KEYS = 3


@dataclass(frozen=True)
class LoadedModel:
    """A float model in eval mode. ``label``: short name for files and reports;
    ``weights``: "published" / "shipped" (zoo), "factory" (as built) or the weights path;
    ``zoo``: the zoo entry (``None`` for a factory), which gives input shape and dataset."""

    spec: str
    label: str
    model: nn.Module
    weights: str
    zoo: ZooModel | None = None

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return None if self.zoo is None else self.zoo.input_shape

    @property
    def dataset(self) -> str | None:
        return None if self.zoo is None else self.zoo.dataset


def load_model_spec(spec: str, *, weights: str | Path | None = None) -> LoadedModel:
    """The float model named by ``spec``, with the state dict of ``weights`` if given."""
    if spec in MODEL_ZOO:
        entry = MODEL_ZOO[spec]
        if weights is None:
            kind = "published" if entry.weights is None else "shipped"
            return LoadedModel(spec, spec, load_model(spec), kind, entry)
        model = load_model(spec, pretrained=False)
        return LoadedModel(spec, spec, _with_weights(model, weights), str(weights), entry)
    model = load_factory(spec)
    if weights is not None:
        model = _with_weights(model, weights)
    return LoadedModel(spec, spec_label(spec), model.eval(), _label(weights))


def spec_label(spec: str) -> str:
    """A short name for ``spec``: the zoo name, the file stem of ``FILE.py:FACTORY``, or the
    factory's name in a package (``torchvision.models:resnet18`` -> ``resnet18``)."""
    if spec in MODEL_ZOO:
        return spec
    source, _, factory = spec.rpartition(":")
    return Path(source).stem if _is_file_source(source) else factory


def load_factory(spec: str) -> nn.Module:
    """Call the factory of ``FILE.py:NAME`` or ``package.module:NAME``; its nn.Module."""
    source, sep, name = spec.rpartition(":")
    if not sep or not source or not name.isidentifier():
        raise IntqError(
            f"unknown model {spec!r}: give a zoo name ({', '.join(MODEL_ZOO)}), "
            "FILE.py:FACTORY or package.module:FACTORY"
        )
    _prepare_torchvision()
    module = _import_file(source) if _is_file_source(source) else _import_module(source)
    factory = getattr(module, name, None)
    if not callable(factory):
        what = "has no" if factory is None else "has a non-callable"
        raise IntqError(f"model {spec}: {source} {what} factory {name!r}")
    try:
        model = factory()
    except (Exception, SystemExit) as exc:  # sys.exit() in user code must not end intq
        raise IntqError(f"model factory {spec} raised {_one_line(exc)}") from None
    if not isinstance(model, nn.Module):
        raise IntqError(
            f"model factory {spec} returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file or of a plain ``torch.save``d state dict
    (also inside a checkpoint dict under 'state_dict' / 'model_state_dict' / 'model')."""
    path = Path(path)
    if not path.is_file():
        raise IntqError(f"weights file {path} does not exist")
    state = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    for key in _CHECKPOINT_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise IntqError(
            f"weights file {path} holds no state dict (a mapping from names to tensors); "
            "save model.state_dict()"
        )
    return _strip_prefix(state, "module.")


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> nn.Module:
    """Load ``state`` into ``model`` after checking every name and shape; one IntqError line
    that counts and shows the missing, unexpected and mis-shaped tensors otherwise."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = [
        _count(missing, "missing tensor"),
        _count(unexpected, "unexpected tensor"),
        _count(shapes, "shape mismatch (file vs model)", plural="shape mismatches (file vs model)"),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise IntqError(
            f"{where} does not fit the model (a different architecture?): {'; '.join(problems)}"
        )
    model.load_state_dict(state)
    return model


def _with_weights(model: nn.Module, weights: str | Path) -> nn.Module:
    return apply_state_dict(model, read_state_dict(weights), f"weights file {weights}").eval()


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise IntqError(f"weights file {path} is not a valid safetensors file: "
                        f"{_one_line(exc)}") from None


def _read_torch(path: Path):
    import pickle

    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        needs = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(exc), re.IGNORECASE)
        if needs:
            raise IntqError(
                f"refusing to unpickle {path}: it needs code ({needs[1]}); save "
                "model.state_dict() with torch.save, or a .safetensors file"
            ) from None
        raise IntqError(f"weights file {path} is neither safetensors nor a torch state dict "
                        f"({_unpickling_reason(exc)})") from None
    except Exception as exc:  # a damaged file: torch.load raises many unrelated types
        raise IntqError(f"weights file {path} cannot be read: {_one_line(exc)}") from None


def _unpickling_reason(exc: Exception) -> str:
    found = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n|$)", str(exc))
    return found[1] if found else _one_line(exc)


def _strip_prefix(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop a prefix every key has (``nn.DataParallel`` saves ``module.<name>``)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _count(items: list[str], noun: str, plural: str | None = None) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_SHOWN_KEYS]) + (", ..." if len(items) > _SHOWN_KEYS else "")
    return f"{len(items)} {noun if len(items) == 1 else plural or noun + 's'} ({shown})"


def _is_file_source(source: str) -> bool:
    return source.endswith(".py") or "/" in source or "\\" in source or Path(source).is_file()


def _import_file(source: str):
    path = Path(source)
    if not path.is_file():
        raise IntqError(f"model file {path} does not exist")
    if path.suffix != ".py":
        raise IntqError(f"model file {path} is not a Python file (.py)")
    module_name = f"_intq_model_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up here
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise IntqError(f"model file {path} failed to load: {_one_line(exc)}") from None
    return module


def _prepare_torchvision() -> None:
    """Import torchvision the way that works here (user models often build on it or on timm,
    which imports it); a broken install is left for the user's own import to report."""
    try:
        import_torchvision()
    except Exception:  # noqa: BLE001 - reported by the user's import, with its context
        pass


def _import_module(source: str):
    try:
        return importlib.import_module(source)
    except ImportError as exc:
        raise IntqError(f"cannot import model module {source!r}: {_one_line(exc)}") from None
    except (Exception, SystemExit) as exc:
        raise IntqError(f"model module {source} failed to load: {_one_line(exc)}") from None


def _label(weights: str | Path | None) -> str:
    return "factory" if weights is None else str(weights)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
