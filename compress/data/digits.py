"""scikit-learn's 8×8 handwritten digits (1,797 images, shipped inside the package: no download)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from compress.data.base import Data, TensorImages, check_shape, limited


def load(
    input_shape: Sequence[int],
    num_classes: int,
    test_size: int = 360,
    split_seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Data:
    """A fixed seeded train/test split (1,437/360 by default); pixels 0..16 scaled to zero mean, unit variance."""
    from sklearn.datasets import load_digits

    check_shape("digits", (1, 8, 8), 10, input_shape, num_classes)
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(split_seed).permutation(len(y))
    test_idx, train_idx = order[:test_size], order[test_size:]
    images = torch.from_numpy(x).float().view(-1, 1, 8, 8)
    mean, std = images[train_idx].mean(), images[train_idx].std()
    images, labels = (images - mean) / std, torch.from_numpy(y).long()
    train, test = TensorImages(images[train_idx], labels[train_idx]), TensorImages(images[test_idx], labels[test_idx])
    return Data(limited(train, limit_train), limited(test, limit_test), (1, 8, 8), 10)
