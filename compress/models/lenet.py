"""LeNet-5 (LeCun et al. 1998) with ReLU and max-pooling, sized for any input."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


class LeNet5(nn.Module):
    """conv5x5(6) → pool → conv5x5(16) → pool → fc120 → fc84 → fc(classes).

    Inputs smaller than 32×32 get the classic padding of 2 on the first convolution.
    """

    def __init__(self, input_shape: Sequence[int], num_classes: int):
        super().__init__()
        channels, height, width = input_shape
        pad = 2 if min(height, width) < 32 else 0
        self.features = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=pad), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        h, w = ((height + 2 * pad - 4) // 2 - 4) // 2, ((width + 2 * pad - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * h * w, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, num_classes),
        )  # fmt: skip

    def forward(self, x):
        return self.classifier(self.features(x))
