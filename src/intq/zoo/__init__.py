"""Model zoo and datasets: named CNNs with shipped weights, Fashion-MNIST, training."""

from intq.zoo.dataset import Dataset
from intq.zoo.fashion_mnist import load_fashion_mnist
from intq.zoo.registry import (
    DEFAULT_MODEL,
    MODEL_ZOO,
    ZooModel,
    list_models,
    load_model,
    load_weights,
    save_weights,
    train_zoo_model,
)
from intq.zoo.train import TrainRecipe, evaluate_accuracy, train_classifier

__all__ = [
    "DEFAULT_MODEL",
    "MODEL_ZOO",
    "Dataset",
    "TrainRecipe",
    "ZooModel",
    "evaluate_accuracy",
    "list_models",
    "load_fashion_mnist",
    "load_model",
    "load_weights",
    "save_weights",
    "train_classifier",
    "train_zoo_model",
]
