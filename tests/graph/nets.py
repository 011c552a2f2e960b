"""Small CNNs written the way users write them, one per family and spelling the passes meet."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def randomize_batchnorms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-trivial running stats and affine parameters, so folding is tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
            if m.affine:
                m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class MobileNetV1Like(nn.Module):
    """Depthwise separable convs with BN and ReLU6, nn.Flatten, Dropout, Linear head."""

    def __init__(self) -> None:
        super().__init__()
        layers = [*conv_bn(1, 8, 3, 2), nn.ReLU6(inplace=True)]
        for cin, cout, stride in ((8, 16, 1), (16, 24, 2)):
            layers += [*conv_bn(cin, cin, 3, stride, groups=cin), nn.ReLU6(inplace=True)]
            layers += [*conv_bn(cin, cout, 1), nn.ReLU6(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(24, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(x)))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.expand = nn.Sequential(*conv_bn(cin, hidden, 1), nn.ReLU6())
        self.dw = nn.Sequential(*conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6())
        self.project = nn.Sequential(*conv_bn(hidden, cout, 1))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.dw(self.expand(x)))
        return x + out if self.residual else out


class MobileNetV2Like(nn.Module):
    """Inverted residuals with adds, ReLU6, mean over (H, W), Dropout + Linear classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(1, 8, 3, 2), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(8, 8, 1, 3),
            InvertedResidual(8, 16, 2, 3),
            InvertedResidual(16, 16, 1, 3),
        )
        self.head = nn.Sequential(*conv_bn(16, 32, 1), nn.ReLU6())
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(x.mean((2, 3)))


class BasicBlock(nn.Module):
    """torchvision style: one shared in-place ReLU module, `out += identity` then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(cin, cout, 3, stride)
        self.conv2, self.bn2 = conv_bn(cout, cout, 3)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(*conv_bn(cin, cout, 1, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNetLike(nn.Module):
    """Basic blocks (add then ReLU), max-pool stem, AdaptiveAvgPool2d((1, 1)), torch.flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(1, 8, 3)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(8, 8, 1)
        self.layer2 = BasicBlock(8, 16, 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(x, 1))


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int) -> None:
        super().__init__(*conv_bn(cin, cout, k), nn.ReLU())


class InceptionLike(nn.Module):
    """Parallel branches joined by torch.cat, functional pools, x.view(x.size(0), -1), F.linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBNReLU(1, 8, 3)
        self.b1 = ConvBNReLU(8, 4, 1)
        self.b2 = nn.Sequential(ConvBNReLU(8, 4, 1), ConvBNReLU(4, 6, 3))
        self.b3 = ConvBNReLU(8, 2, 1)
        self.b4 = nn.Conv2d(8, 4, 1)
        self.fc_weight = nn.Parameter(torch.randn(10, 16) * 0.2)
        self.fc_bias = nn.Parameter(torch.randn(10) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.stem(x), 2)
        b3 = self.b3(F.avg_pool2d(x, 3, 1, 1))
        b4 = self.b4(F.max_pool2d(x, 3, stride=1, padding=1))
        x = torch.cat([self.b1(x), self.b2(x), b3, b4], dim=-3)
        x = F.adaptive_avg_pool2d(x, (1, 1))
        return F.linear(x.view(x.size(0), -1), self.fc_weight, self.fc_bias)


class FunctionalNet(nn.Module):
    """Functional spellings: F.conv2d with parameters, F.pad / ZeroPad2d, grouped and depthwise
    convs, hardtanh(0, 6), clamp(0, 6), torch.add / x.add / +, cat, pools, reshape, F.linear."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.w1 = nn.Parameter(torch.randn(8, 1, 3, 3, generator=g) * 0.5)
        self.b1 = nn.Parameter(torch.randn(8, generator=g) * 0.1)
        self.bn1 = nn.BatchNorm2d(8)
        self.pad2 = nn.ZeroPad2d((0, 1, 0, 1))
        self.w2 = nn.Parameter(torch.randn(8, 4, 3, 3, generator=g) * 0.3)
        self.bn2 = nn.BatchNorm2d(8)
        self.w3 = nn.Parameter(torch.randn(8, 1, 3, 3, generator=g) * 0.3)
        self.w4 = nn.Parameter(torch.randn(8, 8, 1, 1, generator=g) * 0.3)
        self.bn4 = nn.BatchNorm2d(8)
        self.same = nn.Conv2d(8, 8, 3, padding="same")
        self.same_even = nn.Conv2d(8, 8, 2, padding="same")
        self.w5 = nn.Parameter(torch.randn(10, 16, generator=g) * 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(F.conv2d(F.pad(x, (1, 1, 1, 1)), self.w1, self.b1)))
        y = F.hardtanh(self.bn2(F.conv2d(self.pad2(x), self.w2, None, 2, 0, 1, 2)), 0.0, 6.0)
        z = torch.clamp(F.conv2d(y, self.w3, padding=1, groups=8), 0, 6)
        z = F.relu6(torch.add(self.bn4(F.conv2d(z, self.w4)), y))
        s = self.same(z).add(z)
        s = F.relu(s + self.same_even(s))
        s = F.dropout(F.max_pool2d(s, 2), 0.3, self.training)
        t = torch.cat((s, F.avg_pool2d(s, 3, 1, 1, ceil_mode=True)), 1).mean((-1, -2), keepdim=True)
        return F.linear(t.reshape(t.shape[0], -1), self.w5)


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


class SwishNet(nn.Module):
    """Swish (a sigmoid table and a product in integers) and a softmax (a float island)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.act = Swish()
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.act(self.conv(x)), 1).flatten(1)
        return torch.softmax(self.fc(x), dim=1)


class Gate(nn.Module):
    """Data-dependent control flow: untraceable."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.mean() > 0:
            return x * 0.5
        return x


class GatedNet(nn.Module):
    """An untraceable gate between two convs; the gate's branch flips with the input's sign."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        nn.init.zeros_(self.conv.bias)
        self.bn = nn.BatchNorm2d(4)
        self.gate = Gate()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gate(self.bn(self.conv(x))))
        x = F.adaptive_avg_pool2d(F.relu(self.conv2(x)), 1)
        return self.fc(torch.flatten(x, 1))


class RootBranchNet(nn.Module):
    """Data-dependent control flow in the root forward itself."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        while x.abs().max() > 1:
            x = x / 2
        return x


class CountingNet(nn.Module):
    """Python state read in forward: the trace bakes in the value of its own call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x) * self.calls


class UnfoldableNet(nn.Module):
    """A BN after a ReLU, a conv whose output is also read by an add (no fold), and a ReLU
    whose input has another reader (no fusion)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn_after_relu = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn_shared_input = nn.BatchNorm2d(4)
        self.conv3 = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_after_relu(F.relu(self.conv1(x)))
        y = self.conv2(x)
        z = self.bn_shared_input(y) + y
        w = self.conv3(z)
        return F.relu(w) + w


class SharedConvNet(nn.Module):
    """One conv module called twice, each call followed by its own BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(4)
        self.bn_b = nn.BatchNorm2d(4)
        self.stem = nn.Conv2d(1, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return F.relu(self.bn_a(self.conv(x))) + self.bn_b(self.conv(x))


class InplaceNet(nn.Module):
    """In-place ops whose overwritten input is read again afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        before = self.conv2(y)
        y.relu_()
        after = self.conv2(y)
        return before + after + y


class LinearBNNet(nn.Module):
    """Linear -> BatchNorm1d -> ReLU head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc1 = nn.Linear(4, 16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(F.adaptive_avg_pool2d(self.conv(x), 1), 1)
        return self.fc2(F.relu(self.bn(self.fc1(x))))


class _Backbone(nn.Module):
    """conv -> ReLU -> global pool -> flatten: the features of the head nets below."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, stride=2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1), 1)


class ReshapedHead(_Backbone):
    """fc -> reshape (N, 10, 1, 1) -> flatten -> output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = self.fc(self.features(x))
        return torch.flatten(y.reshape(y.size(0), 10, 1, 1), 1)


class ReluHead(ReshapedHead):
    """fc + ReLU (fused): the clamp needs the integer output grid."""

    def forward(self, x):
        return F.relu(self.fc(self.features(x)))


class SharedLogits(_Backbone):
    """fc's value is an output and the input of fc2: fc keeps its quantizer, fc2 has none."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 10)
        self.fc2 = nn.Linear(10, 4)

    def forward(self, x):
        y = self.fc(self.features(x))
        return y, self.fc2(y)


class AddedHeads(_Backbone):
    """Two linears summed: both feed an add (integer), the add's output is quantized."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 10)
        self.fc2 = nn.Linear(8, 10)

    def forward(self, x):
        f = self.features(x)
        return self.fc(f) + self.fc2(f)


class ConvOutput(_Backbone):
    def forward(self, x):
        return self.conv(x)


# FunctionalNet's even-kernel padding="same" conv makes torch warn; the form is on purpose.
SAME_PADDING_WARNING = "ignore:Using padding='same' with even kernel:UserWarning"

FAMILIES = {
    "mobilenet_v1": MobileNetV1Like,
    "mobilenet_v2": MobileNetV2Like,
    "resnet": ResNetLike,
    "inception": InceptionLike,
    "functional": FunctionalNet,
}
SUPPORTED = {
    **FAMILIES,
    "shared_conv": SharedConvNet,
    "inplace": InplaceNet,
    "linear_bn": LinearBNNet,
}


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return randomize_batchnorms(SUPPORTED[name]()).eval()
