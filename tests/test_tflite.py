"""LiteRT .tflite files: litert-torch conversion and the interpreter's fidelity against the .pte twin, the LiteRT int8
route the quantizing steps take for them, one-line errors for what cannot become a .tflite, the host device timing
them beside the other runtimes, and their rows through the pipeline."""

from __future__ import annotations

import copy
import dataclasses
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from conftest import fast_host, make_context
from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer
from misbehaving import Cumprod

import compress.formats
from adb_bench.host import HostDevice, in_child, noop_file
from compress.config import build
from compress.errors import UserError
from compress.formats.pte import export_pte, load_pte
from compress.formats.tflite import Tflite, export_tflite, load_tflite
from compress.metrics import file_sizes
from compress.pipeline import run_variant
from compress.results import fail
from compress.techniques.base import Context
from compress.techniques.pt2e import Exported
from compress.techniques.quant import QAT, DynamicQuant, StaticQuant
from compress.train import evaluate


def converted(model: torch.nn.Module, example: torch.Tensor, path: Path) -> dict | str:
    """export_tflite in a forked child: its columns, or its UserError as `UserError: message`. litert-torch lowers
    some operators through JAX, whose MLIR thread pool a process forked after a conversion would wait on forever;
    this process forks the pipeline's stages, so it never converts itself (the CLI's job process neither: its stage
    children convert)."""

    def convert() -> dict | str:
        torch.set_num_threads(1)  # this process's OpenMP pool (it trained LeNet-5) is not the child's
        try:
            return export_tflite(model, example, path)
        except UserError as exc:
            return f"UserError: {exc}"

    return in_child(convert)


def tflite_context(data, teacher) -> Context:
    return dataclasses.replace(make_context(data, teacher), format=Tflite())


# LeNet-5's weights as LiteRT lays them out (the first conv, one input channel, becomes a depthwise conv)
CONV_FILTERS, LINEAR_WEIGHTS = [(1, 5, 5, 6), (16, 5, 5, 6)], [(120, 400), (84, 120), (10, 84)]


def weight_types(path: Path) -> dict[tuple, str]:
    """The dtype of each of LeNet-5's weight tensors in a .tflite file, by shape (no activation has these shapes)."""
    interpreter = Interpreter(model_path=str(path))
    found = {tuple(map(int, t["shape"])): t["dtype"].__name__ for t in interpreter.get_tensor_details()}
    return {shape: found[shape] for shape in CONV_FILTERS + LINEAR_WEIGHTS}


def io_types(path: Path) -> tuple[str, str]:
    interpreter = Interpreter(model_path=str(path))
    (into,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    return into["dtype"].__name__, out["dtype"].__name__


@pytest.fixture(scope="module")
def lenet_files(_trained_lenet, mnist5k, tmp_path_factory) -> dict:
    """The trained LeNet-5 as an fp32 .tflite, its .pte twin and quant_static's LiteRT int8 .tflite, each evaluated
    from the file."""
    folder = tmp_path_factory.mktemp("tflite")
    ctx = tflite_context(mnist5k, _trained_lenet)
    int8 = StaticQuant().finalize(copy.deepcopy(_trained_lenet), ctx)
    notes = converted(_trained_lenet, ctx.example, folder / "fp32.tflite")
    converted(int8, ctx.example, folder / "int8.tflite")
    export_pte(_trained_lenet, ctx.example, folder / "fp32.pte")
    return {
        "fp32": folder / "fp32.tflite", "int8": folder / "int8.tflite", "pte": folder / "fp32.pte", "notes": notes,
        "int8_model": int8,
        "fp32_acc": evaluate(load_tflite(folder / "fp32.tflite"), mnist5k.test)["acc_top1"],
        "int8_acc": evaluate(load_tflite(folder / "int8.tflite"), mnist5k.test)["acc_top1"],
        "pte_acc": evaluate(load_pte(folder / "fp32.pte"), mnist5k.test)["acc_top1"],
    }  # fmt: skip


def test_float_tflite_agrees_with_its_pte_twin_and_the_model(lenet, mnist5k, lenet_files):
    assert abs(lenet_files["fp32_acc"] - lenet_files["pte_acc"]) <= 0.01
    assert lenet_files["fp32_acc"] == evaluate(lenet, mnist5k.test)["acc_top1"]
    batch = torch.stack([mnist5k.test[i][0] for i in range(7)])  # the file takes batch 1: the loader splits
    with torch.no_grad():
        torch.testing.assert_close(load_tflite(lenet_files["fp32"])(batch), lenet(batch), rtol=1e-4, atol=1e-4)
    assert lenet_files["notes"] == {"format": "tflite", "export_note": ""}
    assert io_types(lenet_files["fp32"]) == ("float32", "float32")


def test_static_int8_tflite_is_3x_smaller_than_fp32_and_as_accurate(lenet_files):
    assert file_sizes(lenet_files["fp32"])["size_bytes"] / file_sizes(lenet_files["int8"])["size_bytes"] >= 3
    assert abs(lenet_files["fp32_acc"] - lenet_files["int8_acc"]) <= 0.01
    model = lenet_files["int8_model"]
    assert isinstance(model, Exported) and isinstance(model.quantizer, PT2EQuantizer)  # LiteRT's own quantizer
    # weights left as quantize ops for the converter (not folded into int8 constants as the .pte route does)
    assert any("quantize_per_channel" in str(n.target) for n in model.exported.graph.nodes)
    assert io_types(lenet_files["int8"]) == ("int8", "int8")  # static int8 kernels, end to end
    assert set(weight_types(lenet_files["int8"]).values()) == {"int8"}
    assert set(weight_types(lenet_files["fp32"]).values()) == {"float32"}


def test_dynamic_tflite_has_int8_weights_and_float_io(_trained_lenet, mnist5k, lenet_files, tmp_path):
    ctx = tflite_context(mnist5k, _trained_lenet)
    int8 = DynamicQuant().finalize(copy.deepcopy(_trained_lenet), ctx)
    assert int8.quantizer.global_config.is_dynamic
    assert converted(int8, ctx.example, tmp_path / "dyn.tflite") == {"format": "tflite", "export_note": ""}
    assert io_types(tmp_path / "dyn.tflite") == ("float32", "float32")  # activations quantized at run time
    assert set(weight_types(tmp_path / "dyn.tflite").values()) == {"int8"}  # LiteRT's dynamic range: convs too
    assert file_sizes(lenet_files["fp32"])["size_bytes"] / file_sizes(tmp_path / "dyn.tflite")["size_bytes"] >= 3
    accuracy = evaluate(load_tflite(tmp_path / "dyn.tflite"), mnist5k.test)["acc_top1"]
    assert abs(accuracy - lenet_files["fp32_acc"]) <= 0.01


def test_qat_on_the_litert_route_is_one_line(_trained_lenet, mnist5k):
    with pytest.raises(UserError, match=r"^QAT cannot take LiteRT's int8 route: .*; use quant_static, or export=pte"):
        QAT(calibration_batches=1).apply(copy.deepcopy(_trained_lenet), None, tflite_context(mnist5k, _trained_lenet))


def test_an_operator_litert_cannot_convert_is_named_in_one_line(tmp_path):
    error = converted(Cumprod().eval(), torch.zeros(1, 1, 28, 28), tmp_path / "c.tflite")
    assert error == (
        "UserError: Cumprod cannot be converted to .tflite by litert-torch (Lowering not found: aten.cumprod.default); "
        "replace the layers that use what it names or use export=pte"
    )
    assert not (tmp_path / "c.tflite").exists()


def test_host_device_times_tflite_interleaved_with_its_overhead_and_memory(lenet_files, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the no-op programs built afresh, not found from before
    files = [str(lenet_files["fp32"]), str(lenet_files["int8"]), str(lenet_files["pte"])]
    results = HostDevice(threads=1, warmup=2, iters=40, rounds=2, min_time_s=0).benchmark(files, [1, 1, 28, 28])
    assert [len(r["samples_ms"]) for r in results] == [40, 40, 40] and [r["threads"] for r in results] == [1, 1, 1]
    assert [r["round_sizes"] for r in results] == [[20, 20]] * 3
    fp32, int8, pte = results
    # one no-op per runtime: the two .tflite files share LiteRT's, the .pte has ExecuTorch's
    assert fp32["call_overhead_ms"] == int8["call_overhead_ms"] != pte["call_overhead_ms"]
    assert 0 < fp32["call_overhead_ms"] < min(sorted(fp32["samples_ms"])[20], sorted(int8["samples_ms"])[20])
    assert noop_file(".tflite", [1, 1, 28, 28]).parent == tmp_path / "pocketbench-noop"
    # the file's own memory, net of LiteRT's no-op (a process holding torch is hundreds of MB): measured 1.1 MB fp32,
    # 1.6 MB int8 (XNNPACK's packed int8 weights and buffers)
    assert all(0.2 < r["mem_peak_mb"] < 16 for r in (fp32, int8))
    assert int8["qengine"] is None and fp32["notes"] == []


def test_tflite_export_config_builds_the_format(make_cfg):
    fmt = build(make_cfg("export=tflite").export)
    assert isinstance(fmt, Tflite) and fmt.file_name == "model.tflite"
    assert fmt.int8_route == "litert_pt2e" and not fmt.uses_qengine  # device.qengine stays out of its cache keys
    assert set(fmt.versions()) == {"litert-torch", "litert-converter", "ai-edge-litert", "torchao"}


def test_without_the_litert_extra_export_tflite_is_one_line(make_cfg, monkeypatch):
    cfg = make_cfg("export=tflite")
    monkeypatch.delitem(sys.modules, "compress.formats.tflite")  # imported again, from scratch
    monkeypatch.delattr(compress.formats, "tflite")
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if not installed
    with pytest.raises(UserError, match=r"^export=tflite needs litert-torch and ai-edge-litert \(.*\); pip install"):
        build(cfg.export)


QUICK = ("ratio=0.5", "train.epochs=1", "finetune.epochs=1", "finetune.between_epochs=1")


def row_of(make_cfg, technique: str, fmt: str, *overrides: str) -> dict:
    """One variant through the pipeline (stages in forked children), as the CLI runs it; a failure is its row."""
    row: dict = {}
    try:
        run_variant(make_cfg(f"technique={technique}", f"export={fmt}", *QUICK, *overrides), fast_host(), row)
    except Exception as exc:  # noqa: BLE001 — what the CLI does with it
        fail(row, exc)
    return row


@pytest.mark.slow
@pytest.mark.parametrize("technique", ["none", "prune_channel", "quant_static"])
def test_tflite_row_is_as_accurate_as_the_pte_row_of_the_same_variant(make_cfg, technique):
    pte, tflite = (row_of(make_cfg, technique, fmt) for fmt in ("pte", "tflite"))
    assert (pte["status"], tflite["status"]) == ("ok", "ok"), tflite.get("error")
    assert abs(tflite["acc_top1"] - pte["acc_top1"]) <= 0.01
    assert tflite["format"] == "tflite" and tflite["artifact"].endswith("model.tflite")
    assert tflite["size_bytes"] == Path(tflite["artifact"]).stat().st_size
    assert (tflite["params"], tflite["macs"]) == (pte["params"], pte["macs"])
    assert tflite["latency_ms_p50"] > 0 and tflite["call_overhead_ms"] > 0
    if technique == "quant_static":
        assert tflite["compression_x"] >= 3  # the int8 .tflite against the fp32 .tflite (the row's reference)


@pytest.mark.slow
@pytest.mark.parametrize("technique", ["quant_dynamic", "deep_compression"])
def test_other_int8_techniques_take_the_litert_route(make_cfg, technique):
    row = row_of(make_cfg, technique, "tflite")
    assert row["status"] == "ok", row.get("error")
    assert row["compression_x"] >= 3 and row["acc_delta"] > -0.03


@pytest.mark.slow
def test_what_cannot_be_converted_or_quantized_is_a_failed_row(make_cfg):
    custom = ("model=custom", "model.target=misbehaving.Cumprod", "model.name=cumprod")
    row = row_of(make_cfg, "none", "tflite", *custom)
    assert row["status"] == "failed" and "\n" not in row["error"]
    assert "Cumprod cannot be converted to .tflite by litert-torch (Lowering not found: aten.cumprod" in row["error"]
    row = row_of(make_cfg, "qat", "tflite")
    assert row["status"] == "failed" and "QAT cannot take LiteRT's int8 route" in row["error"]
