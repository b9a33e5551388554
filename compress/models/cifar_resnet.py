"""The CIFAR ResNets of He et al. 2016 (§4.2): 6n+2 layers, 16/32/64 channels, option-A shortcuts.

Option A (identity shortcuts, zero-padded channels when the width doubles) is the one with the
published parameter counts: resnet20 0.27M, resnet56 0.85M.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class PadShortcut(nn.Module):
    """Option A: subsample by 2 and zero-pad the new channels (no parameters)."""

    def __init__(self, extra_channels: int):
        super().__init__()
        self.extra = extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, plus the shortcut, then ReLU."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        changed = stride != 1 or in_channels != channels
        self.shortcut = PadShortcut(channels - in_channels) if changed else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet(nn.Module):
    """conv3×3(16) → 3 stages of n blocks (16, 32, 64 channels; stride 2 between) → global pool → fc."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, depth: int = 20):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(input_shape[0], 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        blocks, width = [], 16
        for i, channels in enumerate((16, 32, 64)):
            for j in range(n):
                blocks.append(BasicBlock(width, channels, 2 if i and not j else 1))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(torch.flatten(self.pool(x), 1))
