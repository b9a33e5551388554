"""Shared fixtures: composed configs, the embedded data, a briefly trained LeNet-5, a technique Context."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from adb_emulator.harness import attached_phone, private_adb_server
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from adb_bench.host import HostDevice
from compress.config import build
from compress.data import Data
from compress.techniques.base import Context
from compress.train import Recipe, fit

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python cli.py ARGS` in the repository, as a user runs it (one-line errors: HYDRA_FULL_ERROR=0)."""
    env = os.environ | {"HYDRA_FULL_ERROR": "0"} | (env or {})
    command = [sys.executable, str(ROOT / "cli.py"), *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)

# torch.export in this process (tests/test_pte.py) registers a device with autograd's engine; an engine that first
# starts after that marks every later fork as unable to run backward, and the pipeline's stage children (forks of
# the test process) train. Start the engine now, before any export. (The CLI's job process never exports or trains
# itself: its stages do, in their own children.)
torch.ones(1, requires_grad=True).sum().backward()


def config_names(group: str) -> list[str]:
    """The options of a config group (conf/GROUP/*.yaml), sorted: the registry tests parametrize over."""
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One stage cache for the whole session, so the embedded data is parsed once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def make_cfg(cache_dir):
    """`make_cfg("technique=none", ...)` → the composed config (Hydra compose API), cache in a tmp dir."""

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            return compose("config", [f"cache_dir={cache_dir}", *overrides])

    return make


@pytest.fixture(scope="session")
def mnist5k(make_cfg) -> Data:
    return build(make_cfg().dataset)


@pytest.fixture(scope="session")
def _trained_lenet(make_cfg, mnist5k) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build(make_cfg().model)
    return fit(model, mnist5k.train, Recipe(epochs=4, lr=0.05), seed=0)


@pytest.fixture
def lenet(_trained_lenet) -> torch.nn.Module:
    """LeNet-5 trained for 4 epochs on mnist5k (~96%); a fresh copy per test."""
    return copy.deepcopy(_trained_lenet)


def fast_host(**settings) -> HostDevice:
    """The host device for tests that need a row, not a measurement: one warm-up run, one block per file, one round."""
    return HostDevice(**{"warmup": 1, "iters": 1, "rounds": 1, "min_time_s": 0} | settings)


# The catalogue's size: a pair of model and technique on tiny synthetic data, one epoch, the steps at their fastest.
TINY = (
    "dataset=fake", "dataset.input_shape=[3,16,16]", "dataset.n_train=64", "dataset.n_test=32", "train.epochs=1",
    "train.batch_size=32", "finetune.epochs=0", "finetune.between_epochs=0", "ratio=0.5",
)  # fmt: skip
# Speed knobs, set on every step that has them (calibration, Taylor gradients, sparse training, CP-ALS iterations).
STEP_KNOBS = {"calibration_batches": 1, "taylor_batches": 1, "sparsity_epochs": 1, "epochs": 1, "max_iter": 3}
# Smaller members of the big models' families, so the matrix fits CI: VGG-16 and MobileNetV2 at reduced width (the
# same code, a tenth of the weights or less), and a small torchvision classifier (squeeze-and-excitation,
# hard-swish) for the `torchvision` config.
SMALLER = {
    "vgg16_bn_cifar": ["model.width=0.25"],
    "mobilenet_v2": ["model.width_mult=0.35"],
    "torchvision": ["model.name=mobilenet_v3_small"],
}


def tiny_cfg(make_cfg, model: str, technique: str, *overrides: str):
    """`model` × `technique` at the catalogue's tiny size; `overrides` last, so they win."""
    cfg = make_cfg(f"model={model}", f"technique={technique}", *TINY, *SMALLER.get(model, []), *overrides)
    for step in cfg.technique.steps.values():
        step.update({k: v for k, v in STEP_KNOBS.items() if k in step})
    return cfg


class Shifted(torch.nn.Module):
    """`base` answering the class after the one it predicts: another function of the same weights (a teacher that
    is never right, an export that writes something else)."""

    def __init__(self, base: torch.nn.Module):
        super().__init__()
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x).roll(1, dims=1)


def make_context(data: Data, base: torch.nn.Module, qengine: str = "x86", finetune_lr: float = 0.01) -> Context:
    """A technique Context like the pipeline builds, fine-tuning with SGD at `finetune_lr`."""

    def finetune(model: torch.nn.Module, epochs: int, lr: float | None = None, label: str = "fine-tune",
                 **hooks) -> torch.nn.Module:  # fmt: skip
        return fit(model, data.train, Recipe(epochs=epochs, lr=lr or finetune_lr), 0, None, label, **hooks)

    example = data.test[0][0].unsqueeze(0)
    return Context(data, example, base, finetune, qengine, seed=0)


@pytest.fixture
def lenet_context(mnist5k, _trained_lenet) -> Context:
    return make_context(mnist5k, _trained_lenet)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A private adb server (its own port and home), killed at the end of the test module."""
    with private_adb_server(tmp_path_factory.mktemp("adb-home")) as srv:
        yield srv


@pytest.fixture
def phone(server, tmp_path):
    """An emulated phone (shell v2) attached to the private adb server for one test."""
    with attached_phone(server, tmp_path / "phone") as attached:
        yield attached
