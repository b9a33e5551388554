"""The wiring from measurements to a row: accuracy is the exported file's, the reference and the variant are the
right way round, the reductions point the right way, and each stage's key changes exactly when what determines the
stage changes. A device that answers chosen timings makes the latency columns exact."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from conftest import Shifted

from compress import pipeline
from compress.config import build
from compress.formats.ptl import Ptl, load_ptl
from compress.train import evaluate
from compress.variant import Plan


class Scripted:
    """A device whose session gives the i-th file `p50s[i]` ms (samples spread ±2% around it); it records the
    files of every session, one line each, in `log` (sessions run in the stage's child process)."""

    exclusive_host = False
    profiling = False

    def __init__(self, log: Path, *p50s: float):
        self.log, self.p50s = log, p50s

    @property
    def sessions(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def attach(self) -> None:
        """Always there."""

    def identity(self) -> dict:
        return {"device": "scripted", "p50s": list(self.p50s)}

    def benchmark(self, model_paths: list[str], input_shape: list[int]) -> list[dict]:
        with self.log.open("a") as handle:
            handle.write(json.dumps(list(model_paths)) + "\n")
        spread = [1 + 0.01 * (k % 5 - 2) for k in range(40)]
        return [{"samples_ms": [p50 * s for s in spread]} for p50, _ in zip(self.p50s, model_paths, strict=False)]


FAST = ("train.epochs=1", "finetune.epochs=1")


@pytest.mark.slow
def test_a_row_compares_the_variant_with_the_reference_timed_beside_it(make_cfg, mnist5k, tmp_path):
    cfg = make_cfg("technique=prune_channel", "ratio=0.5", *FAST)
    device, row = Scripted(tmp_path / "sessions", 10.0, 4.0), {}
    pipeline.run_variant(cfg, device, row)
    [(ref, var)] = device.sessions
    assert row["status"] == "ok" and var == row["artifact"] != ref  # the variant is the session's second file
    assert row["ref_latency_ms_p50"] == pytest.approx(10.0) and row["latency_ms_p50"] == pytest.approx(4.0)
    assert row["speedup_x"] == pytest.approx(2.5) and row["speedup_x_lo"] <= 2.5 <= row["speedup_x_hi"] < 2.6
    data, sizes = Path(var).read_bytes(), (Path(ref).stat().st_size, Path(var).stat().st_size)
    assert (row["size_bytes"], row["size_gzip_bytes"]) == (len(data), len(gzip.compress(data, compresslevel=9)))
    assert row["compression_x"] == pytest.approx(sizes[0] / sizes[1]) and row["compression_x"] > 2  # half the channels
    assert row["macs_reduction_x"] > 2 and row["nonzero_reduction_x"] > 2
    assert row["speedup_efficiency"] == pytest.approx(2.5 / row["macs_reduction_x"])
    accuracy = [evaluate(load_ptl(Path(p)), mnist5k.test)["acc_top1"] for p in (ref, var)]
    assert row["acc_top1"] == pytest.approx(accuracy[1])
    assert row["acc_delta"] == pytest.approx(accuracy[1] - accuracy[0])


@pytest.mark.slow
def test_accuracy_is_that_of_the_exported_file_not_of_the_model_in_memory(make_cfg, monkeypatch, tmp_path):
    export = Ptl.export
    monkeypatch.setattr(Ptl, "export", lambda self, model, example, path: export(self, Shifted(model), example, path))
    cfg = make_cfg("technique=prune_magnitude", "ratio=0.3", *FAST)
    cfg.cache_dir = str(tmp_path)  # files of another function: not in the session's cache
    row: dict = {}
    pipeline.run_variant(cfg, Scripted(tmp_path / "sessions", 1.0, 1.0), row)
    assert row["acc_before_finetune"] > 0.8  # the model in memory (evaluated in Python) is right ...
    assert row["acc_top1"] < 0.1  # ... its exported file is not, and the row says so
    assert abs(row["acc_delta"]) < 0.05  # the reference's file was rolled too


def artifact_key(cfg, data, technique=None) -> str:
    """The variant's key (or that of `technique`, e.g. the reference)."""
    return pipeline._artifact_key(cfg, data, Plan.of(cfg, technique or cfg.technique, build(cfg.export)))


CHANGES_THE_FILE = ["ratio=0.7", "technique.steps.prune.importance=l2", "finetune.epochs=2", "seed=1", "export=pte",
                    "train.epochs=2", "finetune.lr=0.02"]  # fmt: skip
LEAVES_THE_FILE = ["device.iters=50", "device.warmup=10", "device.threads=2", "device.min_time_s=0.1",
                   "device.rounds=2"]


def test_the_variant_key_changes_with_what_makes_the_file_and_nothing_else(make_cfg, mnist5k):
    base = ("technique=prune_channel", "ratio=0.5")
    key = artifact_key(make_cfg(*base), mnist5k)
    for override in CHANGES_THE_FILE:
        assert artifact_key(make_cfg(*base, override), mnist5k) != key, override
    for override in LEAVES_THE_FILE:
        assert artifact_key(make_cfg(*base, override), mnist5k) == key, override
    # the engine packs int8 weights: it keys a quantizing technique
    int8 = artifact_key(make_cfg("technique=quant_static"), mnist5k)
    assert artifact_key(make_cfg("technique=quant_static", "device.qengine=qnnpack"), mnist5k) != int8
    # the reference (no steps) ignores the technique, its ratio and the fine-tune
    reference = [make_cfg(*o) for o in [(), ("ratio=0.7",), ("finetune.epochs=3",)]]
    assert len({artifact_key(c, mnist5k, pipeline.REFERENCE) for c in reference}) == 1


def test_the_benchmark_key_follows_the_device_and_both_files(make_cfg, tmp_path):
    cfg = make_cfg()
    cfg.cache_dir = str(tmp_path)
    ref, a, b = (tmp_path / n / "model.ptl" for n in ("ref", "a", "b"))
    for path in (ref, a, b):
        path.parent.mkdir()
        path.write_bytes(b"")
    device = Scripted(tmp_path / "sessions", 2.0, 1.0)
    first = pipeline.bench_stage(cfg, device, ref, a, [1, 1, 28, 28])
    again = pipeline.bench_stage(cfg, device, ref, a, [1, 1, 28, 28])
    other = pipeline.bench_stage(cfg, device, ref, b, [1, 1, 28, 28])
    slower = pipeline.bench_stage(cfg, Scripted(tmp_path / "other", 3.0, 1.0), ref, a, [1, 1, 28, 28])
    assert [d.source for d in (first, again, other, slower)] == ["computed", "cache", "computed", "computed"]
    assert device.sessions == [[str(ref), str(a)], [str(ref), str(b)]]
    assert first.value["reference"]["samples_ms"][2] == 2.0 and first.value["variant"]["samples_ms"][2] == 1.0


@pytest.mark.slow
def test_on_the_host_a_channel_pruned_resnet_is_faster_and_a_magnitude_pruned_one_is_not(make_cfg):
    """Real timings: half the channels of ResNet-20 (~2x fewer MACs: the shortcuts keep theirs) come out faster
    beyond the interval; half its weights set to zero (the same dense work) within noise of the base."""
    common = ("model=resnet20", "dataset=fake", "dataset.n_train=256", "dataset.n_test=64", "train.epochs=1",
              "finetune.epochs=0", "ratio=0.5", "device.warmup=10", "device.iters=80", "device.rounds=4",
              "device.min_time_s=0.4")  # fmt: skip
    rows = {}
    for technique in ("prune_channel", "prune_magnitude"):
        cfg = make_cfg(f"technique={technique}", *common)
        rows[technique] = {}
        pipeline.run_variant(cfg, build(cfg.device), rows[technique])
    channel, magnitude = rows["prune_channel"], rows["prune_magnitude"]
    assert channel["macs_reduction_x"] > 1.8 and channel["speedup_x_lo"] > 1.0, channel  # measurably faster
    # within noise (room for the level one file's memory may land on: the phone-like rounds see it too)
    assert magnitude["macs_reduction_x"] == 1.0 and magnitude["speedup_x_lo"] <= 1.05, magnitude
    assert magnitude["speedup_x_hi"] >= 0.95 and 0.8 < magnitude["speedup_x"] < 1.25, magnitude
    assert channel["rounds"] == magnitude["rounds"] == 4 and channel["call_overhead_ms"] > 0
