import sys

import torch

from intq.torchvision_compat import import_torchvision


def test_torchvision_models_build_and_run():
    tv = import_torchvision()
    assert tv is not None and "torchvision.models" in sys.modules
    out = tv.models.mobilenet_v3_small()(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, 1000)


def test_timm_imports_after_it():
    import_torchvision()
    import timm

    assert timm.create_model("resnet10t")(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)
