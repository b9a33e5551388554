"""The data sets: torchvision's (files present / missing without network), the user's image folders, digits."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from compress.config import build
from compress.errors import UserError

CONF = Path(__file__).resolve().parents[1] / "conf"
TORCHVISION_SETS = sorted(
    p.stem
    for p in (CONF / "dataset").glob("*.yaml")
    if OmegaConf.load(p).get("_target_") == "compress.data.torchvision_sets.load"
)


@pytest.fixture
def no_network(monkeypatch):
    """Name resolution fails at once, as on this machine, whether or not the test machine has network."""

    def fail(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)


@pytest.mark.parametrize("name", TORCHVISION_SETS)
def test_torchvision_set_missing_without_network_says_where_to_put_the_files(make_cfg, tmp_path, no_network, name):
    cfg = make_cfg(f"dataset={name}", f"dataset.root={tmp_path}")
    with pytest.raises(UserError, match=f"without network, put the files at {tmp_path}/") as err:
        build(cfg.dataset)
    assert "\n" not in str(err.value)


def _idx(path: Path, array: torch.Tensor) -> None:
    """MNIST's idx format: magic (0, 0, ubyte=8, ndim), big-endian dims, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 8, array.dim()) + struct.pack(f">{array.dim()}I", *array.shape)
    path.write_bytes(header + array.numpy().tobytes())


@pytest.mark.parametrize(("name", "folder"), [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_files_put_where_the_message_says_load(make_cfg, tmp_path, no_network, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 30), ("t10k", 20)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", torch.randint(256, (n, 28, 28), generator=gen, dtype=torch.uint8))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", torch.arange(n, dtype=torch.uint8) % 10)
    data = build(make_cfg(f"dataset={name}", f"dataset.root={tmp_path}", "dataset.limit_train=25").dataset)
    assert (len(data.train), len(data.test), data.input_shape, data.num_classes) == (25, 20, (1, 28, 28), 10)
    x, y = data.train[3]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and int(y) == 3
    assert abs(float(data.test[0][0].mean())) < 3  # normalized, not raw bytes


def _image_tree(root: Path, classes: dict[str, str], per_split: dict[str, int]) -> None:
    for split, n in per_split.items():
        for name, colour in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40 + i, 30), colour).save(root / split / name / f"{i}.png")


def test_imagefolder_loads_a_tree_of_pngs(make_cfg, tmp_path):
    _image_tree(tmp_path, {"cat": "red", "dog": "blue"}, {"train": 3, "val": 2})
    for shape in ([3, 16, 24], [1, 16, 16]):
        over = [
            f"dataset.root={tmp_path}",
            "dataset.num_classes=2",
            f"dataset.input_shape=[{shape[0]},{shape[1]},{shape[2]}]",
        ]
        data = build(make_cfg("dataset=imagefolder", *over, "dataset.limit_train=5").dataset)
        assert (len(data.train), len(data.test), data.num_classes) == (5, 4, 2)
        x, y = data.test[3]
        assert tuple(x.shape) == tuple(shape) and x.dtype == torch.float32 and y == 1


def test_imagefolder_wrong_class_count_says_the_right_one(make_cfg, tmp_path):
    _image_tree(tmp_path, {"a": "red", "b": "blue", "c": "green"}, {"train": 1, "val": 1})
    with pytest.raises(UserError, match="has 3 classes .*set dataset.num_classes=3"):
        build(make_cfg("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.num_classes=2").dataset)


@pytest.mark.parametrize(
    ("make", "message"), [(lambda root: None, "does not exist"), (Path.mkdir, "has no train/ folder")]
)
def test_imagefolder_missing_root_or_split_is_one_clear_line(make_cfg, tmp_path, make, message):
    root = tmp_path / "photos"
    make(root)
    with pytest.raises(UserError, match=f"dataset.root={root} {message}; expected ROOT/train/CLASS"):
        build(make_cfg("dataset=imagefolder", f"dataset.root={root}", "dataset.num_classes=2").dataset)


def test_digits_split_and_limits(make_cfg):
    data = build(make_cfg("dataset=digits").dataset)
    assert (len(data.train), len(data.test), data.input_shape) == (1437, 360, (1, 8, 8))
    assert abs(float(torch.stack([data.train[i][0] for i in range(len(data.train))]).mean())) < 1e-4
    small = build(make_cfg("dataset=digits", "dataset.limit_train=100", "dataset.limit_test=50").dataset)
    assert (len(small.train), len(small.test)) == (100, 50)


def test_dataset_shape_override_is_refused(make_cfg):
    with pytest.raises(UserError, match="dataset digits has input_shape"):
        build(make_cfg("dataset=digits", "dataset.input_shape=[1,16,16]").dataset)
