"""CIFAR-100 architectures of the reference distillation zoo.

The module and parameter names, shapes, initializations and forward computations follow the
CIFAR zoo used by the reference code (the RepDistiller/CRD family, as shipped in mdistiller
``models/cifar``), so that its teacher checkpoints (``{"model": state_dict}`` files) load
with ``strict=True`` and compute the same logits. Unlike the reference, ``forward`` returns
the logits only.

Families:

* :class:`CifarResNet` -- ``resnet8 ... resnet110`` (widths 16-16-32-64) and
  ``resnet8x4`` / ``resnet32x4`` (32-64-128-256); basic blocks, post-activation, AvgPool(8).
* :class:`PreStemResNet` -- ``ResNet18`` / ``ResNet50``: the ImageNet ResNet layout with a
  3x3 stride-1 stem and no max-pool, widths 64-128-256-512, adaptive average pooling.
* :class:`WideResNet` -- ``wrn_16_1``, ``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2`` (pre-activation).
* :class:`VGG` -- ``vgg8/11/13/16/19`` with batch norm; convolutions keep their bias.
* :class:`MobileNetV2` -- ``MobileNetV2`` (expansion 6, width 0.5, the reference ``mobile_half``).
* :class:`ShuffleNetV1` / :class:`ShuffleNetV2` -- ``ShuffleV1`` (groups 3) and ``ShuffleV2``
  (net size 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CifarResNet",
    "PreStemResNet",
    "WideResNet",
    "VGG",
    "MobileNetV2",
    "ShuffleNetV1",
    "ShuffleNetV2",
    "CIFAR_BUILDERS",
]


def _he_normal_fan_out(module: nn.Module) -> None:
    """Kaiming-normal (fan-out, ReLU gain) convolutions and unit/zero batch-norm affine."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _init_small_linear(module: nn.Module) -> None:
    """Fan-out He convolutions, unit/zero BN, N(0, 0.01) linear weights with zero bias."""
    _he_normal_fan_out(module)
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` channel groups: (N, g*k, H, W) -> (N, k*g, H, W)."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


# --------------------------------------------------------------------------------------------
# resnet8 ... resnet110, resnet8x4, resnet32x4


class _PostActBlock(nn.Module):
    """Two 3x3 convolutions with BN; ReLU after the residual sum. Optional projection."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth ``6n + 2`` with basic blocks.

    Args:
        depth: total depth ``6n + 2`` (n blocks per stage).
        widths: stem width then the three stage widths, e.g. ``(16, 16, 32, 64)``.
        num_classes: output classes.
        in_channels: image channels (3 for CIFAR).
        adaptive_pool: average over whatever spatial size remains instead of the reference's
            fixed 8x8 pooling (which assumes 32x32 inputs).
    """

    def __init__(
        self,
        depth: int,
        widths: Sequence[int],
        num_classes: int = 100,
        *,
        in_channels: int = 3,
        adaptive_pool: bool = False,
    ):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CifarResNet: depth must be 6n + 2 (8, 14, 20, ...), got {depth}")
        n = (depth - 2) // 6
        self._in_planes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = self._stage(widths[1], n, stride=1)
        self.layer2 = self._stage(widths[2], n, stride=2)
        self.layer3 = self._stage(widths[3], n, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1) if adaptive_pool else nn.AvgPool2d(8)
        self.fc = nn.Linear(widths[3], num_classes)
        _he_normal_fan_out(self)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self._in_planes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self._in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )
        layers = [_PostActBlock(self._in_planes, planes, stride, downsample)]
        self._in_planes = planes
        layers += [_PostActBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# ResNet18 / ResNet50 ("resnetv2" in the reference zoo)


def _projection(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity (empty) or 1x1-conv + BN shortcut, stored under ``shortcut``."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class _BasicBlockV2(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _projection(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _BottleneckV2(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _projection(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class PreStemResNet(nn.Module):
    """ResNet-18/50 for 32x32 inputs: 3x3 stride-1 stem, four stages, adaptive pooling.

    Args:
        bottleneck: use bottleneck blocks (expansion 4) instead of basic blocks.
        blocks: number of blocks in each of the four stages, e.g. ``(3, 4, 6, 3)``.
        num_classes: output classes.
    """

    def __init__(self, bottleneck: bool, blocks: Sequence[int], num_classes: int = 100):
        super().__init__()
        block = _BottleneckV2 if bottleneck else _BasicBlockV2
        self._in_planes = 64
        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = self._stage(block, 64, blocks[0], stride=1)
        self.layer2 = self._stage(block, 128, blocks[1], stride=2)
        self.layer3 = self._stage(block, 256, blocks[2], stride=2)
        self.layer4 = self._stage(block, 512, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(512 * block.expansion, num_classes)
        _he_normal_fan_out(self)

    def _stage(self, block: type, planes: int, count: int, stride: int) -> nn.Sequential:
        layers = []
        for i in range(count):
            layers.append(block(self._in_planes, planes, stride if i == 0 else 1))
            self._in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# Wide ResNets


class _WideBlock(nn.Module):
    """Pre-activation block (BN-ReLU-conv twice).

    When the width or stride changes, the pre-activation is shared by both paths and the
    shortcut is a 1x1 convolution ``convShortcut``; otherwise the shortcut is the raw input
    and no ``convShortcut`` exists.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.equal_in_out:
            shortcut = x
            out = F.relu(self.bn1(x))
        else:
            out = F.relu(self.bn1(x))
            shortcut = self.convShortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        return shortcut + self.conv2(out)


class _WideStage(nn.Module):
    def __init__(self, count: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(
            *[_WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1) for i in range(count)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` (depth ``6n + 4``) for 32x32 inputs.

    Args:
        depth: ``6n + 4``.
        widen_factor: width multiplier k (stage widths 16k, 32k, 64k).
        num_classes: output classes.
    """

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet: depth must be 6n + 4 (10, 16, 22, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = _WideStage(n, widths[0], widths[1], 1)
        self.block2 = _WideStage(n, widths[1], widths[2], 2)
        self.block3 = _WideStage(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        _he_normal_fan_out(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(torch.flatten(F.avg_pool2d(x, 8), 1))


# --------------------------------------------------------------------------------------------
# VGG with batch norm

_VGG_STAGES = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


def _vgg_stage(in_channels: int, widths: Sequence[int]) -> nn.Sequential:
    """conv(bias)-BN-ReLU repeated, without the final ReLU (applied in ``VGG.forward``)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """VGG-``depth`` with batch norm for 32x32 inputs (``depth`` in 8, 11, 13, 16, 19).

    Five stages separated by 2x2 max-pooling (the fourth pooling only for 64x64 inputs, as in
    the reference), global average pooling and one linear classifier.
    """

    def __init__(self, depth: int, num_classes: int = 100):
        super().__init__()
        if depth not in _VGG_STAGES:
            raise ValueError(f"VGG: depth must be one of {sorted(_VGG_STAGES)}, got {depth}")
        stages = _VGG_STAGES[depth]
        in_channels = [3] + [s[-1] for s in stages[:-1]]
        for i, (cin, widths) in enumerate(zip(in_channels, stages)):
            self.add_module(f"block{i}", _vgg_stage(cin, widths))
        for i in range(4):
            self.add_module(f"pool{i}", nn.MaxPool2d(kernel_size=2, stride=2))
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)
        _init_small_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if height == 64:
            x = self.pool3(x)
        x = F.relu(self.block4(x))
        return self.classifier(torch.flatten(self.pool4(x), 1))


# --------------------------------------------------------------------------------------------
# MobileNetV2 (width 0.5, expansion 6)


def _conv_bn_relu(cin: int, cout: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _InvertedResidual(nn.Module):
    """1x1 expand - 3x3 depthwise - 1x1 linear projection, stored as ``conv.0 ... conv.7``."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, cout, 1, 1, 0, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs (stride-2 stem), as the reference ``mobilenetv2_T_w``.

    Args:
        expansion: expansion factor T of the inverted residuals (6 for ``MobileNetV2``).
        width_mult: channel multiplier (0.5 for ``MobileNetV2``).
        num_classes: output classes.
        input_size: input side (a multiple of 32); sets the final pooling window.
    """

    def __init__(self, expansion: int = 6, width_mult: float = 0.5, num_classes: int = 100, input_size: int = 32):
        super().__init__()
        if input_size % 32 != 0:
            raise ValueError(f"MobileNetV2: input_size must be a multiple of 32, got {input_size}")
        setting = [  # expansion, channels, repeats, first stride
            (1, 16, 1, 1),
            (expansion, 24, 2, 1),
            (expansion, 32, 3, 2),
            (expansion, 64, 4, 2),
            (expansion, 96, 3, 1),
            (expansion, 160, 3, 2),
            (expansion, 320, 1, 1),
        ]
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, channels, 3, 2)
        self.blocks = nn.ModuleList()
        for t, c, n, s in setting:
            out = int(c * width_mult)
            stage = []
            for i in range(n):
                stage.append(_InvertedResidual(channels, out, s if i == 0 else 1, t))
                channels = out
            self.blocks.append(nn.Sequential(*stage))
        last = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(channels, last, 1, 1)
        self.classifier = nn.Sequential(nn.Linear(last, num_classes))
        self.avgpool = nn.AvgPool2d(input_size // 16, ceil_mode=True)
        _init_small_linear(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for stage in self.blocks:
            x = stage(x)
        x = self.avgpool(self.conv2(x))
        return self.classifier(torch.flatten(x, 1))


# --------------------------------------------------------------------------------------------
# ShuffleNet V1 / V2


class _ShuffleUnitV1(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1; stride 2 concatenates an
    average-pooled shortcut, stride 1 adds the input."""

    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.stride = stride
        mid = int(cout / 4)
        self.first_groups = 1 if cin == 24 else groups
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1)) if stride == 2 else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = _channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        out = torch.cat([out, res], 1) if self.stride == 2 else out + res
        return F.relu(out)


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1 for 32x32 inputs (1x1 stem, no max-pool).

    Args:
        out_planes: output channels of the three stages, e.g. ``(240, 480, 960)``.
        num_blocks: units per stage, e.g. ``(4, 8, 4)``.
        groups: groups of the 1x1 convolutions.
        num_classes: output classes.
    """

    def __init__(
        self,
        out_planes: Sequence[int] = (240, 480, 960),
        num_blocks: Sequence[int] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self._in_planes = 24
        self.layer1 = self._stage(out_planes[0], num_blocks[0], groups)
        self.layer2 = self._stage(out_planes[1], num_blocks[1], groups)
        self.layer3 = self._stage(out_planes[2], num_blocks[2], groups)
        self.linear = nn.Linear(out_planes[2], num_classes)

    def _stage(self, out_planes: int, count: int, groups: int) -> nn.Sequential:
        units = []
        for i in range(count):
            # the first unit concatenates its input, so its branch produces the difference
            branch = out_planes - self._in_planes if i == 0 else out_planes
            units.append(_ShuffleUnitV1(self._in_planes, branch, 2 if i == 0 else 1, groups))
            self._in_planes = out_planes
        return nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(torch.flatten(F.avg_pool2d(x, 4), 1))


class _ShuffleUnitV2(nn.Module):
    """Channel split in halves; the second half goes through 1x1 - dw 3x3 - 1x1."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, stride=1, padding=1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1] // 2
        keep, branch = x[:, :c], x[:, c:]
        out = F.relu(self.bn1(self.conv1(branch)))
        out = self.bn2(self.conv2(out))
        out = F.relu(self.bn3(self.conv3(out)))
        return _channel_shuffle(torch.cat([keep, out], 1), 2)


class _DownUnitV2(nn.Module):
    """Spatial down-sampling unit: two stride-2 branches concatenated, then shuffled."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        mid = cout // 2
        self.conv1 = nn.Conv2d(cin, cin, 3, stride=2, padding=1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv2 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv4 = nn.Conv2d(mid, mid, 3, stride=2, padding=1, groups=mid, bias=False)
        self.bn4 = nn.BatchNorm2d(mid)
        self.conv5 = nn.Conv2d(mid, mid, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return _channel_shuffle(torch.cat([left, right], 1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 for 32x32 inputs (1x1 stem, no max-pool).

    Args:
        out_channels: the three stage widths and the final 1x1 width, e.g.
            ``(116, 232, 464, 1024)`` (net size 1).
        num_blocks: basic units after the down-sampling unit of each stage, e.g. ``(3, 7, 3)``.
        num_classes: output classes.
    """

    def __init__(
        self,
        out_channels: Sequence[int] = (116, 232, 464, 1024),
        num_blocks: Sequence[int] = (3, 7, 3),
        num_classes: int = 100,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        cin = 24
        for i in range(3):
            units = [_DownUnitV2(cin, out_channels[i])] + [_ShuffleUnitV2(out_channels[i]) for _ in range(num_blocks[i])]
            self.add_module(f"layer{i + 1}", nn.Sequential(*units))
            cin = out_channels[i]
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], 1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.linear(torch.flatten(F.avg_pool2d(x, 4), 1))


# --------------------------------------------------------------------------------------------
# name -> builder(num_classes)

_NARROW = (16, 16, 32, 64)
_WIDE = (32, 64, 128, 256)

CIFAR_BUILDERS = {
    **{f"resnet{d}": (lambda nc, d=d: CifarResNet(d, _NARROW, nc)) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": lambda nc: CifarResNet(8, _WIDE, nc),
    "resnet32x4": lambda nc: CifarResNet(32, _WIDE, nc),
    "ResNet18": lambda nc: PreStemResNet(False, (2, 2, 2, 2), nc),
    "ResNet50": lambda nc: PreStemResNet(True, (3, 4, 6, 3), nc),
    "wrn_16_1": lambda nc: WideResNet(16, 1, nc),
    "wrn_16_2": lambda nc: WideResNet(16, 2, nc),
    "wrn_40_1": lambda nc: WideResNet(40, 1, nc),
    "wrn_40_2": lambda nc: WideResNet(40, 2, nc),
    **{f"vgg{d}": (lambda nc, d=d: VGG(d, nc)) for d in (8, 11, 13, 16, 19)},
    "MobileNetV2": lambda nc: MobileNetV2(6, 0.5, nc),
    "ShuffleV1": lambda nc: ShuffleNetV1((240, 480, 960), (4, 8, 4), 3, nc),
    "ShuffleV2": lambda nc: ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), nc),
}
"""Reference CIFAR names -> ``builder(num_classes)``."""

