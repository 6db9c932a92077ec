"""ResNets for 32x32 inputs (He et al., "Deep Residual Learning", CVPR 2016, section 4.2).

Depth ``6n + 2``: a 3x3 stem conv to 16 channels, three stages of ``n`` basic blocks with
16, 32 and 64 channels (the last two start with stride 2), global average pooling and a
linear classifier. Shortcuts that change shape are option A of the paper (parameter-free:
subsample by 2 and zero-pad the new channels), as in the original CIFAR experiments and the
TRP paper; option B (1x1 conv + BN) is available.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_model

__all__ = ["CifarResNet", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110"]

Shortcut = Literal["A", "B"]


class PadShortcut(nn.Module):
    """Option-A shortcut: ``(B, C, H, W) -> (B, C + extra, H/2, W/2)``, zero channels added."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with a residual connection."""

    def __init__(self, in_channels: int, channels: int, stride: int, shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            if shortcut == "A":
                self.shortcut = PadShortcut(channels - in_channels)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """``(B, in_channels, 32, 32) -> (B, num_classes)`` logits (any input size works: the
    pooling is global)."""

    def __init__(self, depth: int, num_classes: int = 10, shortcut: Shortcut = "A", in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}.")
        if shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}.")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages, in_channels = [], 16
        for channels, stride in ((16, 1), (32, 2), (64, 2)):
            layers = []
            for index in range(blocks):
                layers.append(BasicBlock(in_channels, channels, stride if index == 0 else 1, shortcut))
                in_channels = channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(64, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 16, 32, 32)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64, 8, 8)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def _cifar(depth: int):
    def build(num_classes: int = 10, shortcut: Shortcut = "A", in_channels: int = 3) -> CifarResNet:
        return CifarResNet(depth, num_classes, shortcut, in_channels)

    build.__name__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR ResNet-{depth} ({(depth - 2) // 6} basic blocks per stage)."
    return register_model(input_size=(3, 32, 32), num_classes=10)(build)


resnet20 = _cifar(20)
resnet32 = _cifar(32)
resnet44 = _cifar(44)
resnet56 = _cifar(56)
resnet110 = _cifar(110)
