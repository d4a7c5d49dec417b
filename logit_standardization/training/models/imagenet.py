"""ImageNet architectures: torchvision ResNets and the reference MobileNetV1.

The ResNets are torchvision's (``weights=None``: nothing is downloaded), so the legacy
torchvision teacher files (``resnet34-333f7ec4.pth``, ``resnet50-19c8e357.pth``) load into
them directly. :class:`MobileNetV1` keeps the module names of the reference student
(``model.0 ... model.14`` and ``fc``), so its state dicts load with ``strict=True``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MobileNetV1", "IMAGENET_BUILDERS"]


def _conv_bn(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU(inplace=True),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


# (output channels, stride) of the 13 depthwise-separable blocks after the 32-channel stem
_MOBILENET_V1 = [
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
]  # fmt: skip


class MobileNetV1(nn.Module):
    """MobileNetV1 for 224x224 inputs: a 3x3 stride-2 stem (32 channels), 13 depthwise-
    separable blocks up to 1024 channels, 7x7 average pooling and a linear classifier.

    Args:
        num_classes: output classes (1000 for ImageNet).
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 2)]
        cin = 32
        for cout, stride in _MOBILENET_V1:
            layers.append(_depthwise_separable(cin, cout, stride))
            cin = cout
        layers.append(nn.AvgPool2d(7))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.model(x), 1))


def _torchvision_resnet(name: str, num_classes: int) -> nn.Module:
    import torchvision.models as tvm

    return getattr(tvm, name)(weights=None, num_classes=num_classes)


IMAGENET_BUILDERS = {
    **{
        f"ResNet{d}": (lambda nc, d=d: _torchvision_resnet(f"resnet{d}", nc))
        for d in (18, 34, 50, 101, 152)
    },
    "MobileNetV1": lambda nc: MobileNetV1(nc),
}
"""ImageNet names -> ``builder(num_classes)``."""
