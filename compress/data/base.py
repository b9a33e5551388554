"""What every data set loader returns, and the helpers they share."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from compress.errors import UserError


@dataclass
class Data:
    """A train and a test split of one classification data set."""

    train: Dataset
    test: Dataset
    input_shape: tuple[int, ...]
    num_classes: int
    content: str = ""  # digest of the samples for data read from files; "" when the config determines them


def digest(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' bytes (a data set's content identity, whatever its location)."""
    sha = hashlib.sha256()
    for t in tensors:
        sha.update(t.contiguous().numpy().tobytes())
    return sha.hexdigest()


class TensorImages(Dataset):
    """Images held in memory as one float tensor (N, C, H, W), with an optional per-sample transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable | None = None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i]
        return (self.transform(x) if self.transform else x), self.labels[i]


def limited(ds: Dataset, limit: int | None) -> Dataset:
    """The first `limit` samples of `ds` (all of it when `limit` is None)."""
    if limit is None or limit >= len(ds):
        return ds
    if limit <= 0:
        raise UserError(f"dataset limit must be a positive number of samples, got {limit}")
    return Subset(ds, range(limit))


def check_shape(name: str, expected: Sequence[int], classes: int, input_shape: Sequence[int], n: int) -> None:
    """A data set with a fixed shape rejects a config that claims another one."""
    if tuple(input_shape) != tuple(expected) or n != classes:
        raise UserError(
            f"dataset {name} has input_shape {list(expected)} and {classes} classes; "
            f"remove the overrides dataset.input_shape / dataset.num_classes"
        )


def _seed_worker(worker_id: int) -> None:
    """Python's and NumPy's generators in a loader worker, from the seed torch gave it (the loader's generator
    draws the base seed; worker i gets base + i): transforms that use them are reproducible too."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def make_loader(ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0, workers: int = 0,
                pin_memory: bool = False) -> DataLoader:  # fmt: skip
    """A loader whose shuffling and workers' seeds come from its own seeded generator (deterministic); `workers`
    processes load and augment the samples (0: this process), pinned when they go to a GPU."""
    gen = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, generator=gen, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=workers > 0 and pin_memory, worker_init_fn=_seed_worker if workers else None,
    )  # fmt: skip
