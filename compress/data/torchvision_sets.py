"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 through torchvision's own loaders and download code.

The images are held in memory as uint8 tensors; each sample is scaled, normalized and (training
split only) augmented on the fly: random crop with padding, optional horizontal flip.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torchvision.transforms import v2

from compress.data.base import Data, TensorImages, check_shape, digest, limited
from compress.errors import UserError

log = logging.getLogger(__name__)


def _where(cls: type, root: Path) -> str:
    """Where torchvision looks for the files of `cls` under `root`."""
    if hasattr(cls, "base_folder"):  # CIFAR: the archive, or its extracted folder
        return f"{root / cls.filename} (or its extracted {root / cls.base_folder}/)"
    return f"{root / cls.__name__ / 'raw'}/ ({', '.join(name for name, _ in cls.resources)})"


def _split(cls: type, root: Path, train: bool, download: bool) -> torchvision.datasets.VisionDataset:
    """torchvision's data set; missing files that cannot be downloaded → one line saying where to put them."""
    try:
        return cls(str(root), train=train, download=download)
    except (RuntimeError, OSError) as exc:  # URLError is an OSError; torchvision raises RuntimeError too
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{cls.__name__} is not under dataset.root={root} and could not be downloaded ({reason}); "
            f"without network, put the files at {_where(cls, root)}"
        ) from exc


def _images(ds: torchvision.datasets.VisionDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, C, H, W) and int64 labels, from MNIST's (N, H, W) or CIFAR's (N, H, W, C)."""
    images = torch.as_tensor(ds.data)
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    return images.contiguous(), torch.as_tensor(ds.targets, dtype=torch.int64)


def _transforms(shape: Sequence[int], mean, std, crop_padding: int, flip: bool) -> tuple[v2.Transform, v2.Transform]:
    test = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))])
    augment = [v2.RandomCrop(list(shape[1:]), padding=crop_padding)] if crop_padding else []
    augment += [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose([*augment, test]), test


def load(
    input_shape: Sequence[int],
    num_classes: int,
    dataset: str,
    mean: Sequence[float],
    std: Sequence[float],
    root: str = "data",
    download: bool = True,
    crop_padding: int = 0,
    flip: bool = False,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Data:
    """`torchvision.datasets.<dataset>` (MNIST, FashionMNIST, CIFAR10, CIFAR100) under `root`."""
    cls = getattr(torchvision.datasets, dataset)
    splits = [_split(cls, Path(root), train, download) for train in (True, False)]
    (x_train, y_train), (x_test, y_test) = (_images(ds) for ds in splits)
    check_shape(dataset, tuple(x_train.shape[1:]), len(splits[0].classes), input_shape, num_classes)
    train_tf, test_tf = _transforms(input_shape, mean, std, crop_padding, flip)
    train, test = TensorImages(x_train, y_train, train_tf), TensorImages(x_test, y_test, test_tf)
    content = digest(x_train, y_train, x_test, y_test)
    return Data(limited(train, limit_train), limited(test, limit_test), tuple(input_shape), num_classes, content)
