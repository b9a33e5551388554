"""Int8 techniques: static PTQ, dynamic, QAT; engines; untraceable models; the pipeline end to end."""

from __future__ import annotations

import copy
import math
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import fast_host, make_context
from misbehaving import DataDependent
from torch import nn
from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import FakeQuantizeBase, ObserverBase

from compress.config import build
from compress.errors import UserError
from compress.formats.ptl import export_ptl, load_ptl
from compress.metrics import file_sizes
from compress.pipeline import run_variant
from compress.techniques.base import quantized_engine
from compress.techniques.quant import QAT, DynamicQuant, StaticQuant
from compress.train import evaluate


def _export(model: nn.Module, example: torch.Tensor, path: Path) -> Path:
    export_ptl(model, example, path, optimize=False)
    return path


def _bytecode(path: Path) -> str:
    """The lite-interpreter bytecode of `path` (a pickle: operator names appear as plain strings)."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/bytecode.pkl"))
        return archive.read(name).decode("latin-1")


def _tensor_bytes(path: Path) -> int:
    """Bytes of tensor storage in the file (`data/` records), without code, debug info and zip headers."""
    with zipfile.ZipFile(path) as archive:
        return sum(i.file_size for i in archive.infolist() if "/data/" in i.filename)


@pytest.fixture(scope="module")
def static_lenet(_trained_lenet, mnist5k, tmp_path_factory) -> dict:
    """The trained LeNet-5 exported as fp32 and after quant_static (x86), both measured from the file."""
    folder = tmp_path_factory.mktemp("static")
    ctx = make_context(mnist5k, _trained_lenet)
    quantized = StaticQuant().finalize(copy.deepcopy(_trained_lenet), ctx)
    fp32 = _export(_trained_lenet, ctx.example, folder / "fp32.ptl")
    int8 = _export(quantized, ctx.example, folder / "int8.ptl")
    return {
        "fp32": fp32, "int8": int8,
        "fp32_acc": evaluate(load_ptl(fp32), mnist5k.test)["acc_top1"],
        "int8_acc": evaluate(load_ptl(int8), mnist5k.test)["acc_top1"],
    }  # fmt: skip


def test_quant_static_lenet_is_smaller_accurate_and_quantized(static_lenet):
    fp32, int8 = static_lenet["fp32"], static_lenet["int8"]
    assert _tensor_bytes(fp32) / _tensor_bytes(int8) >= 3.5  # the weights themselves: int8 vs fp32
    # the whole file: LeNet-5 is so small that ~40 kB of TorchScript code, debug info and zip headers
    # (twice the fp32 file's) cap the ratio near 2.6; a larger model (test_pipeline_quant_static) gets >= 3
    assert file_sizes(fp32)["size_bytes"] / file_sizes(int8)["size_bytes"] >= 2.5
    assert static_lenet["fp32_acc"] - static_lenet["int8_acc"] <= 0.015
    assert all(f"quantized::{op}" in _bytecode(int8) for op in ("conv2d_relu", "linear_relu", "linear"))
    assert "quantized::" not in _bytecode(fp32)


def test_quant_dynamic_quantizes_every_linear_of_the_mlp(make_cfg, mnist5k, tmp_path):
    torch.manual_seed(0)
    mlp = build(make_cfg("model=mlp").model).eval()
    ctx = make_context(mnist5k, mlp)
    quantized = DynamicQuant().finalize(copy.deepcopy(mlp), ctx)
    layers = [m for m in quantized.modules() if isinstance(m, nn.Linear | nnqd.Linear)]
    assert len(layers) == 3 and all(isinstance(m, nnqd.Linear) for m in layers)
    x = mnist5k.test[0][0].unsqueeze(0)
    assert torch.allclose(quantized(x), mlp(x), atol=0.02)
    fp32, int8 = _export(mlp, x, tmp_path / "fp32.ptl"), _export(quantized, x, tmp_path / "int8.ptl")
    assert file_sizes(fp32)["size_bytes"] / file_sizes(int8)["size_bytes"] >= 3
    assert "quantized::linear_dynamic" in _bytecode(int8)
    assert torch.allclose(load_ptl(int8)(x), quantized(x), atol=1e-5)


def test_qat_converts_and_matches_static_accuracy(_trained_lenet, mnist5k, static_lenet, tmp_path):
    ctx = make_context(mnist5k, _trained_lenet)
    step = QAT(calibration_batches=5)
    prepared = step.apply(copy.deepcopy(_trained_lenet), None, ctx)
    assert any(isinstance(m, FakeQuantizeBase) for m in prepared.modules())
    converted = step.finalize(ctx.finetune(prepared, 1), ctx)
    assert not any(isinstance(m, FakeQuantizeBase | ObserverBase) for m in converted.modules())
    path = _export(converted, ctx.example, tmp_path / "qat.ptl")
    assert "quantized::conv2d_relu" in _bytecode(path)
    assert evaluate(load_ptl(path), mnist5k.test)["acc_top1"] >= static_lenet["int8_acc"] - 0.005


def test_qnnpack_model_runs_on_the_host_under_qnnpack(_trained_lenet, mnist5k, tmp_path):
    engine_before = torch.backends.quantized.engine
    ctx = make_context(mnist5k, _trained_lenet, qengine="qnnpack")
    quantized = StaticQuant(observer="histogram", calibration_batches=3).finalize(copy.deepcopy(_trained_lenet), ctx)
    assert torch.backends.quantized.engine == engine_before
    path = _export(quantized, ctx.example, tmp_path / "qnnpack.ptl")
    x = torch.stack([mnist5k.test[i][0] for i in range(32)])
    with quantized_engine("qnnpack"):
        assert torch.equal(load_ptl(path)(x), quantized(x))
    [result] = fast_host(iters=3, qengine="qnnpack").benchmark([str(path)], [1, 1, 28, 28])
    assert result["qengine"] == "qnnpack" and len(result["samples_ms"]) >= 3 and min(result["samples_ms"]) > 0


@pytest.mark.parametrize("step", [StaticQuant(), QAT()], ids=["static", "qat"])
def test_untraceable_model_gets_a_one_line_user_error(step, mnist5k):
    model = DataDependent()
    ctx = make_context(mnist5k, model)
    with pytest.raises(UserError, match="cannot be FX-traced") as info:
        step.finalize(model, ctx) if isinstance(step, StaticQuant) else step.apply(model, None, ctx)
    assert "\n" not in str(info.value)


def test_knobs_reach_the_steps_and_are_checked(make_cfg):
    step = build(make_cfg("technique=quant_static", "technique.steps.quant.observer=histogram").technique.steps.quant)
    assert (step.observer, step.calibration_batches) == ("histogram", 10)
    qat = build(make_cfg("technique=qat", "technique.steps.quant.calibration_batches=3").technique.steps.quant)
    assert qat.calibration_batches == 3
    for name in ("quant_static", "quant_dynamic", "qat"):
        step = build(make_cfg(f"technique={name}").technique.steps.quant)
        assert not step.takes_sweep_ratio and step.uses_qengine
    with pytest.raises(UserError, match="observer"):
        StaticQuant(observer="percentile")
    with pytest.raises(UserError, match="calibration_batches"):
        QAT(calibration_batches=0)
    with pytest.raises(UserError, match="not available"), quantized_engine("arm-nonexistent"):
        pass


@pytest.mark.slow
def test_pipeline_quant_static_row_and_ratio_shares_the_cache(make_cfg):
    overrides = ("model=mlp", "technique=quant_static", "train.epochs=1", "finetune.epochs=0")
    device = fast_host()
    row: dict = {}
    run_variant(make_cfg(*overrides, "ratio=0.5"), device, row)
    assert row["status"] == "ok" and row["artifact_from"] == "computed"
    assert math.isnan(row["ratio"]) and row["ratio_applies"] is False
    assert row["compression_x"] >= 3 and row["acc_delta"] >= -0.015
    again: dict = {}
    run_variant(make_cfg(*overrides, "ratio=0.3"), device, again)
    assert again["status"] == "ok" and again["artifact_from"] == "cache" and again["artifact"] == row["artifact"]
