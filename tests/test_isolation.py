"""A variant that exhausts memory, crashes in native code or hangs is a failed row naming the limit and the part
of the stage; the job process survives and the next variant of the sweep succeeds."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from adb_bench.host import HostDevice
from compress import pipeline
from compress.isolate import Limits, StageError, report_part, run_isolated
from compress.results import fail

QUICK = ("train.epochs=2", "finetune.epochs=0", "dataset.limit_test=200")


def data_segment_gb() -> float:
    """This process's data segment (what RLIMIT_DATA limits, inherited by a forked child), in GB."""
    status = Path(f"/proc/{os.getpid()}/status").read_text()
    return int(re.search(r"VmData:\s+(\d+) kB", status)[1]) / 2**20


def misbehaving(make_cfg, target: dict, *overrides: str):
    cfg = make_cfg(*QUICK, *overrides)
    OmegaConf.update(cfg, "technique", {"name": "misbehaving", "finetune_between": False, "steps": [target]})
    return cfg


def run(cfg) -> dict:
    row = {"status": "failed"}
    try:
        pipeline.run_variant(cfg, HostDevice(warmup=1, iters=1, min_time_s=0), row)
    except Exception as exc:  # noqa: BLE001 — what the CLI does with it
        fail(row, exc)
    return row


@pytest.mark.slow
def test_memory_crash_and_hang_are_failed_rows_and_the_next_variant_succeeds(make_cfg):
    limit = round(data_segment_gb() + 1.0, 1)
    cases = [
        ({"_target_": "misbehaving.Allocate", "gb": 3}, f"limits.memory_gb={limit}",
         f"ran out of memory (limit {limit:.3g} GB, limits.memory_gb) in misbehaving"),
        ({"_target_": "misbehaving.Segfault"}, "limits.variant_s=600", "crashed (SIGSEGV) in misbehaving"),
        ({"_target_": "misbehaving.Hang"}, "limits.variant_s=3",
         "took longer than the 3 s limit (limits.variant_s) in misbehaving"),
    ]  # fmt: skip
    for target, limit_override, message in cases:
        row = run(misbehaving(make_cfg, target, limit_override))
        assert row["status"] == "failed" and row["error"].startswith(message), row["error"]
        assert "\n" not in row["error"]
        after = run(make_cfg(*QUICK, "technique=cluster", limit_override))
        assert after["status"] == "ok" and after["acc_top1"] > 0.5, after.get("error")


def test_an_exception_in_the_child_keeps_its_type_message_and_the_part():
    def work():
        report_part("export")
        raise ValueError("bad shape\nsecond line")

    with pytest.raises(StageError, match=r"^ValueError: bad shape$"):
        run_isolated("variant", work, Limits(None, 60), "limits.variant_s")


def test_a_child_that_exits_without_a_word_is_a_crash_naming_its_part():
    def work():
        report_part("evaluate")
        os._exit(3)

    with pytest.raises(StageError, match=r"^crashed \(exit code 3\) in evaluate$"):
        run_isolated("variant", work, Limits(None, 60), "limits.variant_s")
