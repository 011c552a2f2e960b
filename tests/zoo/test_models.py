"""The zoo's models: traceable by torch.fx, built from the paper's families, shipped weights
that reproduce their recorded accuracy, and EfficientNet-Lite0 with its published weights."""

import hashlib
import operator

import numpy as np
import pytest
import torch
from torch import nn

from intq.errors import IntqError
from intq.zoo import DEFAULT_MODEL, MODEL_ZOO, evaluate_accuracy, list_models, load_model
from intq.zoo.fashion_mnist import load_fashion_mnist
from intq.zoo.registry import SUBSET_SIZE, WEIGHTS_DIR, load_weights, weights_metadata

FMNIST_MODELS = [m.name for m in list_models() if m.dataset == "fashion-mnist"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the 2 shared cores make more threads slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def test_subset():
    return load_fashion_mnist("test").head(SUBSET_SIZE)


@pytest.fixture(scope="module")
def efficientnet():
    return load_model("efficientnet-lite0")


def test_zoo_lists_the_default_and_the_four_families():
    assert DEFAULT_MODEL == "efficientnet-lite0"
    assert list_models()[0].name == DEFAULT_MODEL
    assert set(FMNIST_MODELS) == {
        "mobilenet-v1-fmnist",
        "mobilenet-v2-fmnist",
        "resnet-fmnist",
        "inception-fmnist",
    }


@pytest.mark.parametrize("name", FMNIST_MODELS)
def test_fmnist_model_traces_and_traced_forward_is_identical(name):
    torch.manual_seed(0)
    model = load_model(name, pretrained=False)
    assert not model.training
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(3, *MODEL_ZOO[name].input_shape)
    out = model(x)
    assert out.shape == (3, 10)
    assert torch.equal(traced(x), out)


@pytest.mark.parametrize("name", FMNIST_MODELS)
def test_fmnist_model_is_small(name):
    params = sum(p.numel() for p in MODEL_ZOO[name].build().parameters())
    assert 30_000 <= params <= 300_000


def _traced(name: str) -> tuple[nn.Module, torch.fx.GraphModule]:
    model = MODEL_ZOO[name].build()
    return model, torch.fx.symbolic_trace(model)


def _functions(traced: torch.fx.GraphModule) -> set:
    return {n.target for n in traced.graph.nodes if n.op == "call_function"}


def test_mobilenet_v1_is_depthwise_separable_with_relu6():
    model, traced = _traced("mobilenet-v1-fmnist")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups == c.in_channels == c.out_channels > 1]
    pointwise = [c for c in convs if c.kernel_size == (1, 1)]
    assert len(depthwise) == len(pointwise) >= 4
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())
    assert operator.add not in _functions(traced)


def test_mobilenet_v2_has_inverted_residual_adds_and_linear_projections():
    model, traced = _traced("mobilenet-v2-fmnist")
    assert operator.add in _functions(traced)
    blocks = [m for m in model.modules() if type(m).__name__ == "InvertedResidual"]
    for block in blocks:
        projection = block.block[-1]
        assert isinstance(projection[0], nn.Conv2d) and projection[0].kernel_size == (1, 1)
        assert len(projection) == 2  # conv + BN, no activation: a linear bottleneck
    assert any(b.residual for b in blocks) and any(not b.residual for b in blocks)
    assert any(isinstance(m, nn.ReLU6) for m in model.modules())


def test_resnet_adds_then_relu_with_1x1_downsample():
    model, traced = _traced("resnet-fmnist")
    relu_after_add = [
        n
        for n in traced.graph.nodes
        if n.op == "call_module"
        and isinstance(traced.get_submodule(n.target), nn.ReLU)
        and n.args[0].target is operator.add
    ]
    assert len(relu_after_add) == 4
    shortcuts = [m.shortcut for m in model.modules() if type(m).__name__ == "BasicBlock"]
    downsample = [s for s in shortcuts if not isinstance(s, nn.Identity)]
    assert downsample and all(s[0].kernel_size == (1, 1) for s in downsample)


def test_inception_joins_four_branches_with_cat():
    model, traced = _traced("inception-fmnist")
    cats = [n for n in traced.graph.nodes if n.target is torch.cat]
    assert len(cats) == 3 and all(len(n.args[0]) == 4 for n in cats)
    kernels = {m.kernel_size for m in model.modules() if isinstance(m, nn.Conv2d)}
    assert {(1, 1), (3, 3)} <= kernels


def test_unknown_model_names_the_available_ones():
    with pytest.raises(IntqError, match="unknown model 'resnet-50'.*resnet-fmnist"):
        load_model("resnet-50")


def test_weights_that_do_not_fit_are_a_user_error(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.zeros(2)}, path)
    with pytest.raises(IntqError, match="does not fit"):
        load_weights(MODEL_ZOO["resnet-fmnist"].build(), path)


@pytest.mark.parametrize("name", FMNIST_MODELS)
def test_shipped_weights_reproduce_recorded_accuracy(name, test_subset):
    entry, record = MODEL_ZOO[name], weights_metadata()[name]
    path = WEIGHTS_DIR / entry.weights
    assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
    assert entry.float_accuracy == record["test_accuracy"] >= 0.91
    assert record["subset_size"] == SUBSET_SIZE
    accuracy = evaluate_accuracy(load_model(name), test_subset)
    assert abs(accuracy - record["subset_accuracy"]) <= 0.001


def test_efficientnet_lite0_traces_and_traced_forward_is_identical(efficientnet):
    traced = torch.fx.symbolic_trace(efficientnet)
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    out = efficientnet(x)
    assert out.shape == (1, 1000)
    assert torch.equal(traced(x), out)


def _imagenet_preprocess(path) -> torch.Tensor:
    """Resize the shorter side to 256 (bilinear), center-crop 224, ImageNet mean/std."""
    from PIL import Image

    image = Image.open(path).convert("RGB")
    w, h = image.size
    scale = 256 / min(w, h)
    image = image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    w, h = image.size
    left, top = (w - 224) // 2, (h - 224) // 2
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), np.float32) / 255
    pixels = (pixels - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    return torch.from_numpy(pixels.astype(np.float32).transpose(2, 0, 1)[None])


def test_efficientnet_lite0_recognizes_grace_hopper(efficientnet):
    from matplotlib import cbook

    x = _imagenet_preprocess(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    with torch.no_grad():
        top5 = efficientnet(x)[0].topk(5).indices.tolist()
    uniform_or_suit_or_tie = {652, 834, 906, 457, 451}
    assert uniform_or_suit_or_tie & set(top5), top5
