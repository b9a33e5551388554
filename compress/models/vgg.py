"""VGG-16 with batch norm for 32×32 inputs, as in Li et al. 2017 ("Pruning Filters for Efficient ConvNets").

Thirteen 3×3 conv → BN → ReLU layers with five max-pools, then fc512 → BN → ReLU → fc(classes):
15.0M parameters on CIFAR-10. The pools round up (`ceil_mode`), so inputs smaller than 32 px
(MNIST's 28, digits' 8) still work; larger inputs are averaged to 1×1 before the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class VGG16BN(nn.Module):
    """`width` scales every layer's channels (0.25: 64 → 16, ..., 512 → 128; 1/16 of the parameters)."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        channels = input_shape[0]
        for v in VGG16:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=True))
            else:
                out = max(1, round(v * width))
                layers += [
                    nn.Conv2d(channels, out, 3, padding=1, bias=False),
                    nn.BatchNorm2d(out),
                    nn.ReLU(inplace=True),
                ]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(channels, channels),
            nn.BatchNorm1d(channels),
            nn.ReLU(inplace=True),
            nn.Linear(channels, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))
