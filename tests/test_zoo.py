"""The model zoo: every model config × every data set shape it claims; parameter counts; checkpoints; pretrained."""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import config_names
from omegaconf import OmegaConf

from compress.config import build
from compress.data import Data
from compress.errors import UserError
from compress.formats.ptl import export_ptl, load_ptl
from compress.pipeline import base_model

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = [m for m in config_names("model") if m != "custom"]  # a user's class: tests/test_custom_model.py


def _shapes() -> dict[tuple, list[str]]:
    """Each distinct (input_shape, num_classes) the dataset configs state → the configs stating it."""
    shapes: dict[tuple, list[str]] = {}
    for path in sorted((CONF / "dataset").glob("*.yaml")):
        node = OmegaConf.load(path)
        if OmegaConf.is_missing(node, "input_shape") or OmegaConf.is_missing(node, "num_classes"):
            continue  # imagefolder: the user states its classes (tests/test_datasets.py)
        shapes.setdefault((tuple(node.input_shape), node.num_classes), []).append(path.stem)
    return shapes


SHAPES = _shapes()


def _fake(shape: tuple, classes: int) -> Data:
    return Data([], [], shape, classes)


@pytest.mark.parametrize("dataset", [names[0] for names in SHAPES.values()], ids=lambda d: d)
@pytest.mark.parametrize("model_name", MODELS)
def test_model_fits_every_dataset_shape(make_cfg, model_name, dataset):
    """Every shape of at least the model's `min_size` works; a smaller one really breaks the model's layers, and
    the pipeline refuses it first with one line."""
    cfg = make_cfg(f"model={model_name}", f"dataset={dataset}")
    shape, classes = tuple(cfg.dataset.input_shape), cfg.dataset.num_classes
    if min(shape[1:]) < cfg.model.min_size:
        with pytest.raises((RuntimeError, ValueError)), torch.no_grad():
            build(cfg.model).eval()(torch.randn(2, *shape))
        with pytest.raises(UserError, match=f"needs inputs of at least {cfg.model.min_size}"):
            base_model(cfg, _fake(shape, classes))
        return
    with torch.no_grad():
        assert build(cfg.model).eval()(torch.randn(2, *shape)).shape == (2, classes)


def _min_size(model_name: str) -> int:
    return OmegaConf.load(CONF / "model" / f"{model_name}.yaml").min_size


@pytest.mark.parametrize("model_name", [m for m in MODELS if _min_size(m) > 1])
def test_min_size_is_the_smallest_side_the_model_runs_on(make_cfg, model_name):
    """`min_size` is tight: the model runs on images of exactly that side and breaks one pixel below it."""

    def forward(side: int) -> torch.Tensor:
        cfg = make_cfg(f"model={model_name}", "dataset=fake", f"dataset.input_shape=[1,{side},{side}]")
        with torch.no_grad():
            return build(cfg.model).eval()(torch.randn(2, 1, side, side))

    assert forward(_min_size(model_name)).shape == (2, 10)
    with pytest.raises((RuntimeError, ValueError)):
        forward(_min_size(model_name) - 1)


@pytest.mark.parametrize("model_name", MODELS)
def test_model_exports_to_ptl_and_loads(make_cfg, tmp_path, model_name):
    """Exported once, at the smallest claimed data set shape (tracing costs ~1 s per model)."""
    cfg = make_cfg(f"model={model_name}")
    claimed = [s for s in SHAPES if min(s[0][1:]) >= cfg.model.min_size]
    shape, classes = min(claimed, key=lambda s: (s[0][1] * s[0][2], s[0][0], s[1]))
    cfg = make_cfg(f"model={model_name}", f"dataset={SHAPES[(shape, classes)][0]}")
    torch.manual_seed(0)
    model = build(cfg.model).eval()
    x = torch.randn(1, *shape)
    with torch.no_grad():
        y = model(x)
    export_ptl(model, x, tmp_path / "m.ptl", optimize=False)
    torch.testing.assert_close(load_ptl(tmp_path / "m.ptl")(x), y, rtol=1e-4, atol=1e-4 * float(y.abs().max()))


@pytest.mark.parametrize(("model_name", "published"), [("resnet20", 0.27e6), ("resnet56", 0.85e6)])
def test_cifar_resnets_have_published_parameter_counts(make_cfg, model_name, published):
    model = build(make_cfg(f"model={model_name}", "dataset=cifar10").model)
    assert abs(sum(p.numel() for p in model.parameters()) / published - 1) < 0.02


def test_checkpoint_loads_and_skips_training(make_cfg, tmp_path, caplog):
    torch.manual_seed(123)
    cfg = make_cfg("model=lenet5", "dataset=mnist5k")
    saved = build(cfg.model).state_dict()
    torch.save(saved, tmp_path / "mine.pt")
    cfg = make_cfg("model=lenet5", "dataset=mnist5k", f"model.checkpoint={tmp_path / 'mine.pt'}")
    with caplog.at_level(logging.INFO, logger="compress.pipeline"):
        model, info = base_model(cfg, _fake((1, 28, 28), 10))
    assert info == {"train_s": 0.0, "base_from": "checkpoint", "waited_s": 0.0}
    assert "training skipped" in caplog.text
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[key]), key


def test_mismatched_checkpoint_is_one_clear_line(make_cfg, tmp_path):
    rgb = build(make_cfg("model=lenet5", "dataset=cifar10").model)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    cfg = make_cfg("model=lenet5", "dataset=mnist5k", f"model.checkpoint={tmp_path / 'rgb.pt'}")
    with pytest.raises(UserError, match=r"does not fit model lenet5 .*features\.0\.weight is \[6, 3, 5, 5\]") as err:
        base_model(cfg, _fake((1, 28, 28), 10))
    assert "\n" not in str(err.value)


def test_missing_checkpoint_file_is_a_user_error(make_cfg, tmp_path):
    cfg = make_cfg(f"model.checkpoint={tmp_path / 'nope.pt'}")
    with pytest.raises(UserError, match="no such file"):
        base_model(cfg, _fake((1, 28, 28), 10))


def test_model_too_large_for_the_images_is_a_user_error(make_cfg):
    with pytest.raises(UserError, match="model lenet5 needs inputs of at least 12×12 px"):
        base_model(make_cfg("model=lenet5", "dataset=digits"), _fake((1, 8, 8), 10))


def _hub_file(torch_home: Path) -> Path:
    url = torchvision.models.get_model_weights("resnet18").DEFAULT.url
    return torch_home / "hub" / "checkpoints" / Path(url).name


def test_pretrained_uses_torchvisions_weight_loading(make_cfg, tmp_path, monkeypatch):
    """torchvision finds the DEFAULT weights in $TORCH_HOME/hub/checkpoints/ (no download when present)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(7)
    saved = torchvision.models.resnet18().state_dict()
    _hub_file(tmp_path).parent.mkdir(parents=True)
    torch.save(saved, _hub_file(tmp_path))
    gray = build(make_cfg("model=torchvision", "model.name=resnet18", "model.pretrained=true", "dataset=mnist").model)
    assert torch.equal(gray.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])
    assert torch.allclose(gray.conv1.weight, saved["conv1.weight"].mean(1, keepdim=True))
    assert gray.conv1.stride == (1, 1) and gray.fc.out_features == 10


def test_pretrained_without_file_or_network_says_where_to_put_it(make_cfg, tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    cfg = make_cfg("model=torchvision", "model.pretrained=true", "dataset=cifar10")
    with pytest.raises(UserError, match="without network, put https://.* at " + str(_hub_file(tmp_path))):
        build(cfg.model)
