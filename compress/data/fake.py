"""Synthetic data of any shape: class-dependent Gaussian blobs, learnable, for tests and smoke runs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from compress.data.base import Data, TensorImages, limited


def load(
    input_shape: Sequence[int],
    num_classes: int,
    n_train: int = 512,
    n_test: int = 128,
    noise: float = 1.0,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Data:
    """Each class has a random template image; a sample is its template plus Gaussian noise."""
    gen = torch.Generator().manual_seed(seed)
    shape = tuple(int(s) for s in input_shape)
    templates = torch.randn((num_classes, *shape), generator=gen)

    def split(n: int) -> TensorImages:
        labels = torch.randint(num_classes, (n,), generator=gen)
        images = templates[labels] + noise * torch.randn((n, *shape), generator=gen)
        return TensorImages(images, labels)

    train, test = split(n_train), split(n_test)
    return Data(limited(train, limit_train), limited(test, limit_test), shape, num_classes)
