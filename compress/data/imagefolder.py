"""The user's own images: `root/train/<class>/*.png|jpg…` and `root/val/<class>/…` (torchvision's ImageFolder).

Every image is resized to the configured `input_shape` (channels 1 = grayscale, 3 = RGB) and normalized;
the training split is optionally flipped horizontally.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.transforms import v2

from compress.data.base import Data, limited
from compress.errors import UserError, first_line

LAYOUT = "expected ROOT/train/CLASS/*.jpg and ROOT/val/CLASS/*.jpg (any image type PIL reads)"


def _folder(root: Path, split: str, transform: v2.Transform) -> ImageFolder:
    if not (root / split).is_dir():
        raise UserError(f"dataset.root={root} has no {split}/ folder; {LAYOUT}")
    try:
        return ImageFolder(str(root / split), transform=transform)
    except FileNotFoundError as exc:  # a split without any class folder or image
        raise UserError(f"dataset.root={root}: {first_line(exc)}; {LAYOUT}") from exc


def _transforms(shape: Sequence[int], mean, std, flip: bool) -> tuple[v2.Transform, v2.Transform]:
    channels, height, width = shape
    if channels not in (1, 3):
        raise UserError(f"imagefolder makes 1- or 3-channel images, dataset.input_shape says {channels}")
    head = [v2.ToImage(), v2.Resize([height, width], antialias=True)]
    head += [v2.Grayscale(1)] if channels == 1 else []  # ImageFolder already gives RGB
    tail = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean)[:channels], list(std)[:channels])]
    flips = [v2.RandomHorizontalFlip()] if flip else []
    return v2.Compose(head + flips + tail), v2.Compose(head + tail)


def load(
    input_shape: Sequence[int],
    num_classes: int,
    root: str,
    mean: Sequence[float] = (0.485, 0.456, 0.406),
    std: Sequence[float] = (0.229, 0.224, 0.225),
    flip: bool = True,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Data:
    """Train on `root/train`, test on `root/val`; both must have the same class folders, `num_classes` of them."""
    folder = Path(root)
    if not folder.is_dir():
        raise UserError(f"dataset.root={root} does not exist; {LAYOUT}")
    train_tf, test_tf = _transforms(input_shape, mean, std, flip)
    train, test = _folder(folder, "train", train_tf), _folder(folder, "val", test_tf)
    if train.classes != test.classes:
        raise UserError(f"dataset.root={root}: train/ has classes {train.classes}, val/ has {test.classes}")
    if len(train.classes) != num_classes:
        raise UserError(
            f"dataset.root={root} has {len(train.classes)} classes ({', '.join(train.classes)}); "
            f"set dataset.num_classes={len(train.classes)}"
        )
    content = _content(folder, train, test)
    return Data(limited(train, limit_train), limited(test, limit_test), tuple(input_shape), num_classes, content)


def _content(root: Path, *splits: ImageFolder) -> str:
    """sha256 of every image file's path below `root`, class and bytes: the same images anywhere hash the same."""
    sha = hashlib.sha256()
    for split in splits:
        for path, label in split.samples:
            sha.update(f"{Path(path).relative_to(root)}\0{label}\0".encode())
            sha.update(Path(path).read_bytes())
    return sha.hexdigest()
