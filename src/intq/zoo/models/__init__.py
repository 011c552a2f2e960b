"""Architectures of the model zoo: the paper's CNN families sized for Fashion-MNIST, and
EfficientNet-Lite0 for ImageNet."""

from intq.zoo.models.efficientnet_lite import efficientnet_lite0, load_efficientnet_lite0
from intq.zoo.models.inception import InceptionNet, inception_fmnist
from intq.zoo.models.mobilenet_v1 import MobileNetV1, mobilenet_v1_fmnist
from intq.zoo.models.mobilenet_v2 import MobileNetV2, mobilenet_v2_fmnist
from intq.zoo.models.resnet import ResNet, resnet_fmnist

__all__ = [
    "InceptionNet",
    "MobileNetV1",
    "MobileNetV2",
    "ResNet",
    "efficientnet_lite0",
    "inception_fmnist",
    "load_efficientnet_lite0",
    "mobilenet_v1_fmnist",
    "mobilenet_v2_fmnist",
    "resnet_fmnist",
]
