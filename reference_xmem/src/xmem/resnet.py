"""ResNet trunks (stem + first three stages) written without torchvision.

XMem only uses ResNet-50 (key encoder) and ResNet-18 (value encoder) up to stage 3
(stride 16). The pretrained ImageNet weights upstream downloads on every build are
always overwritten by the checkpoint, so we never fetch them.
Attribute names follow torchvision so checkpoint keys match.
"""

from __future__ import annotations

import torch
from torch import nn

from .conv import Conv2d, conv_bn


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Sequential:
    # Keys `.downsample.0` (conv) and `.downsample.1` (BN) as in torchvision.
    return nn.Sequential(_conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """ResNet-18 block: two 3x3 convs, stride on the first."""

    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _shortcut(cin, planes, stride) if (stride != 1 or cin != planes) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_bn(x, *self.downsample)
        out = self.relu(conv_bn(x, self.conv1, self.bn1))
        out = conv_bn(out, self.conv2, self.bn2)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet-50 block (v1.5: the stride sits on the 3x3 conv, as in torchvision)."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = _conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, cout)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(cin, cout, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else conv_bn(x, *self.downsample)
        out = self.relu(conv_bn(x, self.conv1, self.bn1))
        out = self.relu(conv_bn(out, self.conv2, self.bn2))
        out = conv_bn(out, self.conv3, self.bn3)
        return self.relu(out + identity)


def make_stage(
    block: type[BasicBlock] | type[Bottleneck], cin: int, planes: int, blocks: int, stride: int
) -> nn.Sequential:
    """A ResNet stage; the first block carries the stride and the width change."""
    layers: list[nn.Module] = [block(cin, planes, stride)]
    cout = planes * block.expansion
    layers += [block(cout, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def make_stem_parts(in_channels: int) -> tuple[nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d]:
    """7x7/2 conv, BN, ReLU, 3x3/2 max-pool, as attributes of the owning encoder."""
    return (
        nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    )
