"""ResNets for 224x224 ImageNet inputs (He et al. 2016), written here (no torchvision).

Layout as in torchvision: 7x7 stride-2 stem conv, 3x3 stride-2 max pool, four stages of
64, 128, 256 and 512 base channels, projection shortcuts (1x1 conv + BN) where the shape
changes; ResNet-50 uses bottleneck blocks (expansion 4) with the stride on the 3x3 conv
("ResNet v1.5"). State-dict keys follow torchvision's names, so its weights load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["ImageNetResNet", "resnet18", "resnet34", "resnet50"]


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = _downsample(in_channels, channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = nn.Conv2d(in_channels, channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        return F.relu(self.bn3(self.conv3(out)) + identity)


class ImageNetResNet(nn.Module):
    """``(B, 3, 224, 224) -> (B, num_classes)`` logits."""

    def __init__(
        self, block: type[BasicBlock | Bottleneck], blocks_per_stage: tuple[int, ...], num_classes: int = 1000, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels, stages = 64, []
        for index, (channels, count) in enumerate(zip((64, 128, 256, 512), blocks_per_stage)):
            layers = []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                layers.append(block(in_channels, channels, stride))
                in_channels = channels * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(in_channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))  # (B, 64, 56, 56)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512 * expansion, 7, 7)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model(input_size=(3, 224, 224), num_classes=1000)
def resnet18(num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    """ImageNet ResNet-18 (basic blocks 2-2-2-2)."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@register_model(input_size=(3, 224, 224), num_classes=1000)
def resnet34(num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    """ImageNet ResNet-34 (basic blocks 3-4-6-3)."""
    return ImageNetResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels)


@register_model(input_size=(3, 224, 224), num_classes=1000)
def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ImageNetResNet:
    """ImageNet ResNet-50 (bottleneck blocks 3-4-6-3)."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)
