"""Import torchvision when its native extension cannot load beside a CPU-only torch.

PyPI's torchvision wheel for x86-64 is built against CUDA torch: beside the CPU torch that
intq pins, its ``_C.so`` fails to load and ``import torchvision`` dies in
``torchvision._meta_registrations`` ("operator torchvision::nms does not exist"). The models
(``torchvision.models``) need none of those native ops (NMS, RoI align, deformable conv), so
``import_torchvision`` skips only the fake-tensor registrations of those ops; everything else
imports as usual, and a call to a native op still fails loudly in torch.
"""

from __future__ import annotations

import importlib
import sys
import types

__all__ = ["import_torchvision"]

_META = "torchvision._meta_registrations"


def import_torchvision() -> types.ModuleType | None:
    """``torchvision``, imported even when its native ops are missing; None if not installed."""
    try:
        return importlib.import_module("torchvision")
    except ModuleNotFoundError:
        return None
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    sys.modules[_META] = types.ModuleType(_META)  # the registrations need the native ops
    return importlib.import_module("torchvision")
