"""The small AlexNet of CIFAR-10 compression and generalization papers (the TensorFlow CIFAR-10
tutorial model, "small Alexnet" in Zhang et al. 2017).

conv5×5(64) → ReLU → maxpool3/2 → LRN → conv5×5(64) → ReLU → LRN → maxpool3/2 → fc384 → fc192 → fc(classes).
The pools pad by 1, so any input size works (32×32 → 8×8 feature maps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def LRN() -> nn.LocalResponseNorm:  # noqa: N802 — reads like the layer it is
    """TensorFlow's lrn(depth_radius=4, alpha=0.001 / 9, beta=0.75, bias=1); torch divides alpha by the size."""
    return nn.LocalResponseNorm(9, alpha=0.001, beta=0.75, k=1.0)


class AlexNetCifar(nn.Module):
    def __init__(self, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(input_shape[0], 64, 5, padding=2), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, padding=1), LRN(),
            nn.Conv2d(64, 64, 5, padding=2), nn.ReLU(inplace=True),
            LRN(), nn.MaxPool2d(3, 2, padding=1),
        )  # fmt: skip
        with torch.no_grad():
            flat = self.features(torch.zeros(1, *input_shape)).numel()
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, 384), nn.ReLU(inplace=True),
            nn.Linear(384, 192), nn.ReLU(inplace=True),
            nn.Linear(192, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
