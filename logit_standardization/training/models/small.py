"""Small CPU-scale models for Fashion-MNIST (1x28x28) and scikit-learn digits (1x8x8).

Teacher/student pairs sized so that a whole distillation study runs on a laptop CPU:

* ``resnet_fm`` (teacher): a CIFAR-style ResNet with one basic block per stage, widths
  16-32-64-128, one input channel and global average pooling.
* ``cnn_fm_small`` (student): three conv-BN-ReLU layers (16, 32, 64 channels) with two
  max-poolings, global average pooling and a linear classifier.
* ``mlp_digits`` (teacher): 64-256-256-10 multilayer perceptron.
* ``mlp_digits_small`` (student): 64-32-10 multilayer perceptron.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .cifar import CifarResNet

__all__ = ["SmallCNN", "MLP", "FASHION_MNIST_BUILDERS", "DIGITS_BUILDERS"]


class SmallCNN(nn.Module):
    """conv3x3-BN-ReLU stages with 2x2 max-pooling between them, then GAP and a linear layer.

    Args:
        widths: channels of the convolution stages (a max-pool follows every stage but the last).
        num_classes: output classes.
        in_channels: image channels.
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64), num_classes: int = 10, *, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(cin, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class MLP(nn.Module):
    """Flatten, then Linear-ReLU hidden layers and a linear classifier.

    Args:
        in_features: flattened input size (64 for 8x8 digits).
        hidden: widths of the hidden layers.
        num_classes: output classes.
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        cin = in_features
        for h in hidden:
            layers += [nn.Linear(cin, h), nn.ReLU(inplace=True)]
            cin = h
        layers.append(nn.Linear(cin, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


FASHION_MNIST_BUILDERS = {
    "resnet_fm": lambda nc: CifarResNet(8, (16, 32, 64, 128), nc, in_channels=1, adaptive_pool=True),
    "cnn_fm_small": lambda nc: SmallCNN((16, 32, 64), nc, in_channels=1),
}
"""Fashion-MNIST names -> ``builder(num_classes)``."""

DIGITS_BUILDERS = {
    "mlp_digits": lambda nc: MLP(64, (256, 256), nc),
    "mlp_digits_small": lambda nc: MLP(64, (32,), nc),
}
"""scikit-learn digits names -> ``builder(num_classes)``."""
