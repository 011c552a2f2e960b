"""The ImageNet architectures of benchmarks/architectures.py, as model factories.

Each factory (``resnet18()``, ``ghostnet_050()``, ...) builds one torchvision or timm
architecture with random weights (seed 0; no pretrained weights exist offline) and then
re-estimates every BatchNorm's running statistics from data: the model runs in train mode,
without gradients, over the first ``BN_CROPS`` natural-image calibration crops (ImageNet
normalization) with ``momentum=None`` (a plain average over the batches), then returns in
eval mode. Random weights with the default BN statistics (mean 0, variance 1) give
activations whose ranges have nothing to do with data; re-estimated statistics give every
layer realistic ones. EfficientNet-Lite0 is intq's zoo model with its published weights.

A factory is what ``intq quantize`` takes, so any row of the benchmark can be rerun alone:

    intq quantize benchmarks/arch_zoo.py:resnet18 --input-shape 3,224,224
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from intq.torchvision_compat import import_torchvision
from intq.zoo.natural_images import load_natural_images
from intq.zoo.normalization import IMAGENET, Normalization
from intq.zoo.registry import MODEL_ZOO

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BN_CROPS",
    "build",
    "normalization",
    "reestimate_batchnorm",
]

BN_CROPS = 32
_BN_BATCH = 8
SEED = 0


@dataclass(frozen=True)
class Architecture:
    """One row of the benchmark: ``library`` 'torchvision', 'timm' or 'intq' (zoo),
    ``constructor`` its model function, ``conv_only`` False for models whose blocks are
    not convolutional (LayerNorm, attention): the 0-float-ops target skips them."""

    name: str
    label: str
    library: str
    constructor: str
    kwargs: dict = field(default_factory=dict)
    conv_only: bool = True


_ROWS = [
    Architecture("resnet18", "ResNet-18", "torchvision", "resnet18"),
    Architecture("resnet50", "ResNet-50", "torchvision", "resnet50"),
    Architecture("mobilenet_v2", "MobileNetV2", "torchvision", "mobilenet_v2"),
    Architecture("mobilenet_v3_large", "MobileNetV3-Large", "torchvision", "mobilenet_v3_large"),
    Architecture("efficientnet_b0", "EfficientNet-B0", "torchvision", "efficientnet_b0"),
    Architecture("efficientnet_lite0", "EfficientNet-Lite0 (published weights)", "intq",
                 "efficientnet-lite0"),
    Architecture("regnetx_002", "RegNetX-200MF", "timm", "regnetx_002"),
    Architecture("regnety_002", "RegNetY-200MF", "timm", "regnety_002"),
    Architecture("shufflenet_v2_x0_5", "ShuffleNetV2 x0.5", "torchvision", "shufflenet_v2_x0_5"),
    Architecture("squeezenet1_1", "SqueezeNet 1.1", "torchvision", "squeezenet1_1"),
    Architecture("googlenet", "GoogLeNet", "torchvision", "googlenet",
                 {"aux_logits": False, "init_weights": True}),
    Architecture("densenet121", "DenseNet-121", "torchvision", "densenet121"),
    Architecture("mnasnet0_5", "MNASNet 0.5", "torchvision", "mnasnet0_5"),
    Architecture("vgg11_bn", "VGG-11-BN", "torchvision", "vgg11_bn"),
    Architecture("convnext_tiny", "ConvNeXt-T", "torchvision", "convnext_tiny", conv_only=False),
    Architecture("inception_v3", "Inception-v3", "torchvision", "inception_v3",
                 {"aux_logits": False, "init_weights": True}),
    Architecture("ghostnet_050", "GhostNet 0.5", "timm", "ghostnet_050"),
    Architecture("rexnet_100", "ReXNet 1.0", "timm", "rexnet_100"),
    Architecture("lcnet_050", "LCNet 0.5", "timm", "lcnet_050"),
    Architecture("fbnetc_100", "FBNet-C", "timm", "fbnetc_100"),
    Architecture("mixnet_s", "MixNet-S", "timm", "mixnet_s"),
    Architecture("resnet26d", "ResNet-26-D", "timm", "resnet26d"),
    Architecture("dla34", "DLA-34", "timm", "dla34"),
    Architecture("hrnet_w18_small", "HRNet-W18-small", "timm", "hrnet_w18_small"),
    Architecture("repvgg_a0", "RepVGG-A0", "timm", "repvgg_a0"),
    Architecture("mobilevit_xxs", "MobileViT-XXS", "timm", "mobilevit_xxs", conv_only=False),
]
ARCHITECTURES = {a.name: a for a in _ROWS}


def build(name: str, bn_crops: int | None = BN_CROPS) -> nn.Module:
    """Architecture ``name`` in eval mode: random init (seed 0) with BatchNorm statistics
    re-estimated on the first ``bn_crops`` calibration crops (None: skip, for a model that
    gets its state dict next); EfficientNet-Lite0 with its published weights."""
    arch = ARCHITECTURES[name]
    if arch.library == "intq":
        from intq.zoo import load_model

        return load_model(arch.constructor)
    torch.manual_seed(SEED)
    if arch.library == "torchvision":
        model = getattr(import_torchvision().models, arch.constructor)(weights=None, **arch.kwargs)
    else:
        import_torchvision()
        import timm

        model = timm.create_model(arch.constructor, pretrained=False, **arch.kwargs)
    if bn_crops is None:
        return model.eval()
    return reestimate_batchnorm(model, load_natural_images("calibration", bn_crops, IMAGENET).x)


def normalization(name: str) -> Normalization:
    """The input normalization of architecture ``name``: ImageNet's, or a zoo model's own."""
    arch = ARCHITECTURES[name]
    return MODEL_ZOO[arch.constructor].normalization if arch.library == "intq" else IMAGENET


def reestimate_batchnorm(model: nn.Module, x: torch.Tensor, batch: int = _BN_BATCH) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them as the average of
    the batch statistics over ``x`` (train mode, ``momentum=None``, no gradients); the
    model comes back in eval mode with its original momenta."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            model(x[i : i + batch])
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    return model.eval()


def _factory(name: str):
    def factory() -> nn.Module:
        return build(name)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"{ARCHITECTURES[name].label}: see the module docstring."
    return factory


for _name in ARCHITECTURES:
    setattr(sys.modules[__name__], _name, _factory(_name))
