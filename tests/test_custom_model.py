"""`model=custom`: a user's class or function by import path, its keyword arguments from +model.KEY=V, one line for
each way it can be wrong, and its source in the cache key (editing the model trains it again)."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from conftest import cli

from compress.config import build
from compress.errors import UserError
from compress.models.source import model_identity

TINY_NET = '''
import torch
from torch import nn


class TinyNet(nn.Sequential):
    def __init__(self, input_shape, num_classes, width=8):
        super().__init__(nn.Conv2d(input_shape[0], width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, num_classes))


def no_classes(input_shape):
    return nn.Identity()


def not_a_module(input_shape, num_classes):
    return "a string"
'''


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """A folder on the Python path holding the user's module (a fresh name per test: no stale import)."""
    name = f"mynet_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(TINY_NET)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, tmp_path / f"{name}.py"
    sys.modules.pop(name, None)


def test_a_class_of_yours_with_keyword_arguments(make_cfg, user_code):
    name, _ = user_code
    cfg = make_cfg("model=custom", f"model.target={name}.TinyNet", "+model.width=4")
    model = build(cfg.model)
    assert type(model).__name__ == "TinyNet" and model[0].out_channels == 4 and model[-1].out_features == 10
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("target, message", [
    (None, r"^model=custom needs model.target=PACKAGE.MODULE.NAME"),
    ("nowhere_to_be_found.Net", r"^model.target=nowhere_to_be_found.Net cannot be imported \(.*\); put the folder"),
    ("{}.Missing", r"^model.target=\w+.Missing cannot be imported"),
    ("{}.no_classes", r"^model.target=\w+.no_classes does not take \(input_shape, num_classes\): too many positional"),
    ("{}.not_a_module", r"^model.target=\w+.not_a_module returned a str, not a torch.nn.Module$"),
])  # fmt: skip
def test_each_way_a_target_can_be_wrong_is_one_line(make_cfg, user_code, target, message):
    name, _ = user_code
    overrides = ["model=custom"] + ([f"model.target={target.format(name)}"] if target else [])
    with pytest.raises(UserError, match=message) as caught:
        build(make_cfg(*overrides).model)
    assert "\n" not in str(caught.value)


def test_editing_the_model_s_module_changes_its_identity(make_cfg, user_code):
    name, source = user_code
    cfg = make_cfg("model=custom", f"model.target={name}.TinyNet")
    before = model_identity(cfg.model)
    assert model_identity(cfg.model) == before and before["source"]["target"] is not None
    source.write_text(TINY_NET.replace("nn.ReLU()", "nn.GELU()"))
    assert model_identity(cfg.model)["source"]["target"] != before["source"]["target"]
    assert model_identity(cfg.model)["source"]["_target_"] == before["source"]["_target_"]
    zoo = model_identity(make_cfg("model=lenet5").model)["source"]
    assert set(zoo) == {"_target_"} and zoo["_target_"] is not None  # the zoo's own module is keyed too


@pytest.mark.slow
def test_a_run_with_your_model_trains_it_and_trains_it_again_after_an_edit(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "tinynet_cli.py").write_text(TINY_NET)
    run = ["model=custom", "model.target=tinynet_cli.TinyNet", "model.name=tinynet", "+model.width=6",
           "train.epochs=1", "dataset.limit_train=256", "dataset.limit_test=64", "device.iters=1",
           "device.warmup=1", "device.rounds=1", "device.min_time_s=0", f"cache_dir={tmp_path / 'cache'}"]  # fmt: skip
    env = {"PYTHONPATH": str(tmp_path / "code")}
    rows = []
    for k in range(2):
        done = cli(*run, f"hydra.run.dir={tmp_path / f'run{k}'}", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        rows.append(json.loads((tmp_path / f"run{k}" / "result.json").read_text()))
        (tmp_path / "code" / "tinynet_cli.py").write_text(TINY_NET.replace("nn.ReLU()", "nn.GELU()"))
    assert [r["model"] for r in rows] == ["tinynet", "tinynet"] and rows[0]["status"] == "ok"
    assert [r["base_from"] for r in rows] == ["computed", "computed"]  # the edit retrained
