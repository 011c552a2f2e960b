"""Training loop: augmentation against a numpy reference, seeded determinism, learning,
accuracy counting, and the zoo's train/save path."""

import os
import stat

import numpy as np
import pytest
import torch
from torch import nn

from intq.errors import IntqError
from intq.zoo import Dataset, TrainRecipe, evaluate_accuracy, train_classifier
from intq.zoo.fashion_mnist import load_fashion_mnist
from intq.zoo.registry import MODEL_ZOO, load_weights, save_weights, train_zoo_model
from intq.zoo.train import augment_batch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: the 2 shared cores make more threads slower, not faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def small_train():
    return load_fashion_mnist("train").head(256)


def _reference_variants(image: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every shift in [-pad, pad]^2 of the edge-padded image, mirrored or not."""
    c, h, w = image.shape
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    shifts = [
        padded[:, dy : dy + h, dx : dx + w]
        for dy in range(2 * pad + 1)
        for dx in range(2 * pad + 1)
    ]
    return shifts + [s[:, :, ::-1] for s in shifts]


def test_augment_batch_yields_shifted_or_mirrored_images_of_each_input():
    x = torch.randn(64, 2, 6, 5, generator=torch.Generator().manual_seed(1))
    out = augment_batch(x, torch.Generator().manual_seed(2), pad=2)
    chosen = set()
    for image, augmented in zip(x.numpy(), out.numpy(), strict=True):
        matches = [
            i for i, v in enumerate(_reference_variants(image, 2)) if np.array_equal(v, augmented)
        ]
        assert matches, "augmented image is no shift/flip of its input"
        chosen.add(matches[0])
    assert len(chosen) > 10  # the transforms really vary across the batch


def test_augment_batch_is_a_function_of_the_generator_seed():
    x = torch.randn(16, 1, 28, 28)
    first = augment_batch(x, torch.Generator().manual_seed(5))
    assert torch.equal(first, augment_batch(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(first, augment_batch(x, torch.Generator().manual_seed(6)))


def _train_small(data: Dataset, seed: int) -> nn.Module:
    torch.manual_seed(123)  # same init for both runs; train_classifier reseeds the rest
    model = MODEL_ZOO["mobilenet-v1-fmnist"].build()
    return train_classifier(model, data, epochs=1, lr=0.05, seed=seed, progress=False)


def test_training_is_deterministic_for_a_seed(small_train):
    a, b, c = (_train_small(small_train, seed) for seed in (0, 0, 1))
    state_a, state_b, state_c = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert not all(torch.equal(state_a[k], state_c[k]) for k in state_a)
    assert not a.training


def test_training_learns_and_restores_thread_count(small_train):
    before = torch.get_num_threads()
    torch.manual_seed(0)
    model = train_classifier(
        MODEL_ZOO["mobilenet-v1-fmnist"].build(),
        small_train,
        epochs=6,
        lr=0.2,
        seed=0,
        augment=False,
        batch_size=32,
        progress=False,
        threads=1,
    )
    assert torch.get_num_threads() == before
    assert evaluate_accuracy(model, small_train) > 0.6  # chance is 0.1


class _FixedLogits(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :3]


def test_evaluate_accuracy_counts_argmax_hits():
    x = torch.tensor([[0, 2, 1], [5, 0, 0], [0, 0, 9], [1, 3, 2], [0, 0, 1]], dtype=torch.float32)
    y = torch.tensor([1, 0, 1, 1, 0])
    data = Dataset("t", x.view(5, 1, 1, 3), y)
    hits = sum(int(np.argmax(r)) == t for r, t in zip(x.tolist(), y.tolist(), strict=True))
    assert hits == 3
    assert evaluate_accuracy(_FixedLogits(), data, batch_size=2) == hits / 5


def test_training_needs_labels():
    data = Dataset("unlabelled", torch.zeros(4, 1, 28, 28))
    with pytest.raises(ValueError, match="no labels"):
        train_classifier(nn.Linear(1, 1), data, epochs=1, lr=0.1, seed=0)


@pytest.mark.parametrize("kwargs", [{"epochs": 0, "lr": 0.1}, {"epochs": 1, "lr": 0.0}])
def test_recipe_rejects_bad_hyper_parameters(kwargs):
    with pytest.raises(ValueError):
        TrainRecipe(**kwargs)


def test_zoo_training_writes_loadable_safetensors_atomically(tmp_path, small_train):
    result = train_zoo_model(
        "mobilenet-v1-fmnist",
        epochs=1,
        lr=0.05,
        threads=1,
        train_data=small_train,
        test_data=small_train,
        progress=False,
    )
    assert result.test_images == len(small_train)
    assert result.test_accuracy == evaluate_accuracy(result.model, small_train)
    assert (
        result.recipe.epochs == 1
        and result.recipe.seed == MODEL_ZOO["mobilenet-v1-fmnist"].recipe.seed
    )
    path = save_weights(result.model, tmp_path / "m.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # readable like any file
    loaded = load_weights(MODEL_ZOO["mobilenet-v1-fmnist"].build(), path).eval()
    x = small_train.x[:8]
    assert torch.equal(loaded(x), result.model(x))


def test_efficientnet_is_not_trainable_here():
    with pytest.raises(IntqError, match="cannot be trained here.*resnet-fmnist"):
        train_zoo_model("efficientnet-lite0")
