"""ExecuTorch .pte files: export and runtime fidelity, the PT2E int8 route the quantizing steps take for them, one-line
errors for what cannot become a .pte, the host device timing them, and forked stage children running them."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import cli, config_names, fast_host, make_context
from executorch.extension.pybindings import portable_lib
from misbehaving import DataDependent
from torch import nn
from torch.ao.nn.quantized import Conv2d as AoQuantizedConv2d
from torch.utils.data import Subset
from torchao.quantization.pt2e import FakeQuantizeBase

from adb_bench.host import HostDevice
from compress.config import build
from compress.errors import UserError
from compress.formats.base import Format
from compress.formats.pte import Pte, export_pte, load_pte, use_threads
from compress.formats.ptl import export_ptl
from compress.isolate import Limits, run_isolated
from compress.metrics import file_sizes
from compress.pipeline import run_variant
from compress.techniques.base import Context
from compress.techniques.pt2e import Exported
from compress.techniques.quant import QAT, DynamicQuant, StaticQuant
from compress.train import evaluate


def pte_context(data, teacher) -> Context:
    return dataclasses.replace(make_context(data, teacher), format=Pte())


def int8_ops(model: Exported) -> set[str]:
    """The quantize/dequantize operators of a PT2E-converted graph."""
    return {str(n.target).split(".")[1] for n in model.exported.graph.nodes if "quantized_decomposed" in str(n.target)}


@pytest.fixture(scope="module")
def lenet_pte(_trained_lenet, mnist5k, tmp_path_factory) -> dict:
    """The trained LeNet-5 as an fp32 .pte and after quant_static's PT2E route, both evaluated from the file."""
    folder = tmp_path_factory.mktemp("pte")
    ctx = pte_context(mnist5k, _trained_lenet)
    int8 = StaticQuant().finalize(copy.deepcopy(_trained_lenet), ctx)
    notes = {"fp32": export_pte(_trained_lenet, ctx.example, folder / "fp32.pte"),
             "int8": export_pte(int8, ctx.example, folder / "int8.pte")}  # fmt: skip
    return {
        "fp32": folder / "fp32.pte", "int8": folder / "int8.pte", "int8_model": int8, "notes": notes,
        "fp32_acc": evaluate(load_pte(folder / "fp32.pte"), mnist5k.test)["acc_top1"],
        "int8_acc": evaluate(load_pte(folder / "int8.pte"), mnist5k.test)["acc_top1"],
    }  # fmt: skip


def test_pte_runs_any_batch_like_the_python_model(lenet, mnist5k, lenet_pte):
    batch = torch.stack([mnist5k.test[i][0] for i in range(7)])
    with torch.no_grad():
        torch.testing.assert_close(load_pte(lenet_pte["fp32"])(batch), lenet(batch), rtol=1e-4, atol=1e-4)
    assert lenet_pte["fp32_acc"] == evaluate(lenet, mnist5k.test)["acc_top1"]
    notes = lenet_pte["notes"]["fp32"]
    assert {k: notes[k] for k in ("format", "delegate", "export_note")} == {"format": "pte", "delegate": "xnnpack",
                                                                            "export_note": ""}  # all on XNNPACK
    weights_kb = sum(p.numel() for p in lenet.parameters()) * 4 / 1024
    assert notes["mem_weights_kb"] == pytest.approx(weights_kb, rel=0.01)  # fp32 weights, in XNNPACK's named data


def test_int8_pte_is_3x_smaller_than_fp32_and_as_accurate(lenet_pte):
    assert file_sizes(lenet_pte["fp32"])["size_bytes"] / file_sizes(lenet_pte["int8"])["size_bytes"] >= 3
    assert abs(lenet_pte["fp32_acc"] - lenet_pte["int8_acc"]) <= 0.01
    assert int8_ops(lenet_pte["int8_model"]) == {"quantize_per_tensor", "dequantize_per_tensor",
                                                 "dequantize_per_channel"}  # fmt: skip
    assert lenet_pte["notes"]["int8"]["export_note"] == ""  # every int8 op taken by XNNPACK


def test_each_step_takes_the_int8_route_of_the_format(_trained_lenet, mnist5k):
    step = StaticQuant(calibration_batches=2)
    ao = step.finalize(copy.deepcopy(_trained_lenet), make_context(mnist5k, _trained_lenet))
    assert any(isinstance(m, AoQuantizedConv2d) for m in ao.modules())
    pt2e = step.finalize(copy.deepcopy(_trained_lenet), pte_context(mnist5k, _trained_lenet))
    assert isinstance(pt2e, Exported) and not any(isinstance(m, AoQuantizedConv2d) for m in pt2e.modules())

    class NoInt8(Format):
        name = "onnx"

    ctx = dataclasses.replace(make_context(mnist5k, _trained_lenet), format=NoInt8())
    with pytest.raises(UserError, match=r"int8 techniques cannot export to \.onnx files") as info:
        DynamicQuant().finalize(copy.deepcopy(_trained_lenet), ctx)
    assert "\n" not in str(info.value)


def test_dynamic_pte_quantizes_every_linear_of_the_mlp(make_cfg, mnist5k, tmp_path):
    torch.manual_seed(0)
    mlp = build(make_cfg("model=mlp").model).eval()
    ctx = pte_context(mnist5k, mlp)
    int8 = DynamicQuant().finalize(copy.deepcopy(mlp), ctx)
    weights = [n for n in int8.exported.graph.nodes if "dequantize_per_channel" in str(n.target)]
    assert len(weights) == 3 and "choose_qparams" in int8_ops(int8)  # activations quantized at run time
    export_pte(mlp, ctx.example, tmp_path / "fp32.pte")
    export_pte(int8, ctx.example, tmp_path / "int8.pte")
    assert file_sizes(tmp_path / "fp32.pte")["size_bytes"] / file_sizes(tmp_path / "int8.pte")["size_bytes"] >= 3
    x = torch.stack([mnist5k.test[i][0] for i in range(16)])
    with torch.no_grad():
        torch.testing.assert_close(load_pte(tmp_path / "int8.pte")(x), mlp(x), rtol=0, atol=0.05)


def test_qat_pte_trains_with_fake_quant_then_converts(_trained_lenet, mnist5k, lenet_pte, tmp_path):
    ctx = pte_context(dataclasses.replace(mnist5k, train=Subset(mnist5k.train, range(1000))), _trained_lenet)
    step = QAT(calibration_batches=5)
    prepared = step.apply(copy.deepcopy(_trained_lenet), None, ctx)
    assert isinstance(prepared, Exported) and any(isinstance(m, FakeQuantizeBase) for m in prepared.modules())
    trained = ctx.finetune(prepared, 1)  # fit() calls train() and returns eval(): both work on the exported graph
    assert trained is prepared and not trained.training
    converted = step.finalize(trained, ctx)
    assert not any(isinstance(m, FakeQuantizeBase) for m in converted.modules())
    assert "quantize_per_tensor" in int8_ops(converted)
    assert export_pte(converted, ctx.example, tmp_path / "qat.pte")["export_note"] == ""
    assert evaluate(load_pte(tmp_path / "qat.pte"), mnist5k.test)["acc_top1"] >= lenet_pte["int8_acc"] - 0.005


def test_what_torch_export_cannot_capture_gets_a_one_line_error(mnist5k, tmp_path):
    model = DataDependent()
    with pytest.raises(UserError, match=r"cannot be exported to \.pte by torch\.export .* or use export=ptl") as info:
        export_pte(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.pte")
    assert "\n" not in str(info.value)
    ctx = pte_context(mnist5k, model)
    with pytest.raises(UserError, match="cannot be captured by torch.export for PT2E int8") as info:
        QAT().apply(model, None, ctx)
    assert "\n" not in str(info.value)


class _Lrn(nn.Module):
    """A conv with LocalResponseNorm (as in alexnet_cifar): lowered to avg_pool3d, an op the runtime lacks."""

    def __init__(self):
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(1, 4, 3), nn.LocalResponseNorm(2), nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(self.norm(self.conv(x)).flatten(1))


class _Cumsum(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(torch.cumsum(x.flatten(1), dim=1))


def test_ops_outside_xnnpack_are_noted_and_missing_ones_refused(tmp_path):
    x = torch.zeros(1, 1, 28, 28)
    note = export_pte(_Cumsum().eval(), x, tmp_path / "c.pte")["export_note"]
    assert note == "on portable kernels (XNNPACK did not take them): aten::cumsum.out"
    with pytest.raises(UserError, match=r"_Lrn needs operators ExecuTorch's runtime does not have \(aten::avg_pool3d"):
        export_pte(_Lrn().eval(), x, tmp_path / "l.pte")
    assert not (tmp_path / "l.pte").exists()


def test_portable_delegate_runs_fp32_and_refuses_int8(lenet, lenet_pte, tmp_path):
    x = torch.zeros(1, 1, 28, 28)
    portable = export_pte(lenet, x, tmp_path / "p.pte", "portable")
    assert {k: portable[k] for k in ("format", "delegate", "export_note")} == {"format": "pte", "delegate": "portable",
                                                                               "export_note": ""}  # fmt: skip
    # portable kernels: the program plans every activation; XNNPACK's own workspace leaves it the input and output
    assert portable["mem_planned_kb"] > 20 * lenet_pte["notes"]["fp32"]["mem_planned_kb"]
    with torch.no_grad():
        torch.testing.assert_close(load_pte(tmp_path / "p.pte")(x), lenet(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(UserError, match="int8 .pte files need export.delegate=xnnpack"):
        export_pte(lenet_pte["int8_model"], x, tmp_path / "q.pte", "portable")
    with pytest.raises(UserError, match="unknown export.delegate 'vulkan'; use xnnpack or portable"):
        Pte(delegate="vulkan")


def test_host_device_times_pte_beside_ptl_on_its_threads(lenet, lenet_pte, tmp_path):
    ptl = tmp_path / "m.ptl"
    export_ptl(lenet, torch.zeros(1, 1, 28, 28), ptl, optimize=False)
    use_threads(2)  # (more torch threads would start OpenMP in this process, which later tests fork)
    results = HostDevice(threads=1, warmup=2, iters=40, rounds=2, min_time_s=0).benchmark(
        [str(ptl), str(lenet_pte["fp32"])], [1, 1, 28, 28]
    )
    # each round resized the pool it forked with: XNNPACK ran on the device's threads, as the rows say
    assert [len(r["samples_ms"]) for r in results] == [40, 40] and [r["threads"] for r in results] == [1, 1]
    assert portable_lib._threadpool_get_thread_count() == 2  # this process's pool is as it was


def test_forked_stage_runs_a_pte_on_the_pool_the_parent_started(lenet_pte, mnist5k, tmp_path):
    """The pipeline forks a child per stage: an ExecuTorch thread pool running in the parent must not hang it."""
    use_threads(2)
    load_pte(lenet_pte["int8"])(torch.zeros(1, 1, 28, 28))  # the parent's 2-thread pool ran
    out = tmp_path / "acc.txt"

    def work() -> None:
        torch.set_num_threads(2)  # so load_pte keeps the inherited 2-thread pool
        out.write_text(str(evaluate(load_pte(lenet_pte["fp32"]), mnist5k.test)["acc_top1"]))

    try:
        for _ in range(2):
            run_isolated("variant", work, Limits(None, 60), "limits.variant_s")
            assert float(out.read_text()) == lenet_pte["fp32_acc"]
    finally:
        use_threads(1)


class _BNNet(nn.Module):
    """conv-BN-ReLU twice, then linear-BN-ReLU-linear (as vgg16_bn_cifar's classifier): the batch norms of
    prune_slim's and the zoo's models."""

    def __init__(self):
        super().__init__()
        block = [nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2)]
        block += [nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*block)
        self.fc = nn.Sequential(nn.Linear(16 * 7 * 7, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


@pytest.mark.slow
def test_batchnorm_net_exports_float_and_qat(mnist5k, tmp_path):
    torch.manual_seed(0)
    model = _BNNet()
    ctx = pte_context(mnist5k, model)
    model = ctx.finetune(model, 1)
    x = torch.stack([mnist5k.test[i][0] for i in range(8)])
    assert export_pte(model, ctx.example, tmp_path / "fp32.pte")["export_note"] == ""
    with torch.no_grad():
        torch.testing.assert_close(load_pte(tmp_path / "fp32.pte")(x), model(x), rtol=1e-4, atol=1e-4)
    step = QAT(calibration_batches=3)
    converted = step.finalize(ctx.finetune(step.apply(model, None, ctx), 1), ctx)  # BN folded into the convs
    # and nothing left on portable kernels (the BatchNorm1d's batch counter increment is dropped)
    assert export_pte(converted, ctx.example, tmp_path / "qat.pte")["export_note"] == ""
    accuracy = evaluate(load_pte(tmp_path / "qat.pte"), mnist5k.test)["acc_top1"]
    assert accuracy > 0.85 and abs(accuracy - evaluate(converted, mnist5k.test)["acc_top1"]) <= 0.01


def test_pte_export_config_builds_the_format(make_cfg):
    fmt = build(make_cfg("export=pte").export)
    assert isinstance(fmt, Pte) and fmt.delegate == "xnnpack" and fmt.file_name == "model.pte"
    assert fmt.int8_route == "pt2e" and not fmt.uses_qengine  # device.qengine stays out of its cache keys
    assert build(make_cfg("export=pte", "export.delegate=portable").export).delegate == "portable"


QUICK = ("ratio=0.5", "train.epochs=1", "finetune.epochs=1", "finetune.between_epochs=1")
HOST = fast_host()
EVERY_TECHNIQUE = config_names("technique")


def row_of(make_cfg, technique: str, fmt: str, *overrides: str) -> dict:
    """One variant through the pipeline (stages in forked children), as the CLI runs it."""
    row: dict = {}
    run_variant(make_cfg(f"technique={technique}", f"export={fmt}", *QUICK, *overrides), HOST, row)
    assert row["status"] == "ok" and row["format"] == fmt
    return row


@pytest.mark.slow
@pytest.mark.parametrize("technique", ["none", "prune_channel", "quant_static", "cp"])
def test_pte_row_is_as_accurate_as_the_ptl_row_of_the_same_variant(make_cfg, technique):
    ptl, pte = (row_of(make_cfg, technique, fmt) for fmt in ("ptl", "pte"))
    assert abs(pte["acc_top1"] - ptl["acc_top1"]) <= 0.01
    assert pte["artifact"].endswith("model.pte") and pte["size_bytes"] == Path(pte["artifact"]).stat().st_size
    assert (pte["delegate"], pte["params"], pte["macs"]) == ("xnnpack", ptl["params"], ptl["macs"])
    base = row_of(make_cfg, "none", "pte")  # the reference of a .pte row is the base model's .pte
    assert pte["compression_x"] == pytest.approx(base["size_bytes"] / pte["size_bytes"])
    assert pte["acc_delta"] == pytest.approx(pte["acc_top1"] - base["acc_top1"])
    if technique == "quant_static":
        assert pte["compression_x"] >= 3  # the int8 .pte against the fp32 .pte


@pytest.mark.slow
@pytest.mark.parametrize(
    "technique", [t for t in EVERY_TECHNIQUE if t not in ("none", "prune_channel", "quant_static", "cp", "prune_slim")]
)  # prune_slim needs BatchNorm, which LeNet-5 lacks (test_batchnorm_net_exports_float_and_qat covers its models)
def test_every_technique_exports_to_pte(make_cfg, technique):
    row = row_of(make_cfg, technique, "pte")
    # within 3 points of the base's .pte (measured: -0.1 to +7.8 points, the fine-tune epoch adds to a 1-epoch base)
    assert row["acc_delta"] > -0.03 and row["notes"].count("portable kernels") == 0
    if technique in ("quant_dynamic", "qat", "prune_quant", "prune_qat", "tucker_quant"):  # int8 through PT2E
        assert row["compression_x"] > 2.5


@pytest.mark.slow
def test_a_sweep_over_both_formats_gives_rows_side_by_side(tmp_path):
    proc = cli("-m", "export=ptl,pte", "technique=quant_static", f"cache_dir={tmp_path / 'cache'}",
               f"hydra.sweep.dir={tmp_path / 'sweep'}", "train.epochs=1", "finetune.epochs=0", "device.iters=5",
               "device.warmup=1", "device.min_time_s=0", "device.rounds=1", timeout=900)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pd.read_csv(tmp_path / "sweep" / "summary.csv")
    assert list(table["format"]) == ["ptl", "pte"] and set(table["status"]) == {"ok"}
    assert abs(table["acc_top1"][0] - table["acc_top1"][1]) <= 0.01
