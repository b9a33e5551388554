"""A variant that exhausts memory, crashes in native code or hangs is a failed row naming the limit and the part
of the stage; the job process survives and the next variant of the sweep succeeds."""

from __future__ import annotations

import json
import os
import time

import pytest
from conftest import ROOT, cli

from compress.errors import StageError
from compress.isolate import Limits, report_part, run_isolated


@pytest.mark.slow
def test_memory_crash_and_hang_are_failed_rows_and_the_next_variant_of_the_sweep_succeeds(tmp_path):
    steps = ["{_target_:misbehaving.Allocate,gb:4}", "{_target_:misbehaving.Segfault}", "{_target_:misbehaving.Hang}",
             "{_target_:compress.techniques.cluster.Cluster}"]  # fmt: skip
    swept = "+technique.steps.step=" + ",".join(steps)  # one job per step
    command = ["-m", "technique=none", "technique.name=cluster", swept, "limits.memory_gb=3", "limits.variant_s=15",
               "train.epochs=1", "finetune.epochs=0", "device.warmup=1", "device.iters=20", "device.min_time_s=0",
               "device.rounds=1",
               f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    done = cli(*command, env={"PYTHONPATH": str(ROOT / "tests")})  # where the misbehaving steps are
    assert done.returncode == 1  # failed rows make the sweep exit 1, at its end
    rows = [json.loads((tmp_path / "sweep" / str(job) / "result.json").read_text()) for job in range(4)]
    errors = [row["error"] for row in rows]
    assert errors[0].startswith("ran out of memory (limit 3 GB, limits.memory_gb) in cluster: ")
    assert errors[1] == "crashed (SIGSEGV) in cluster"
    assert errors[2] == "took longer than the 15 s limit (limits.variant_s) in cluster"
    assert rows[3]["status"] == "ok" and abs(rows[3]["acc_delta"]) < 0.05  # the next variant of the sweep
    assert "Traceback" not in done.stdout + done.stderr


def test_an_exception_in_the_child_keeps_its_type_and_first_line():
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


def test_a_stage_past_its_time_limit_is_stopped_so_that_its_cleanup_runs(tmp_path):
    cleaned = tmp_path / "cleaned"

    def work():
        try:
            time.sleep(60)
        finally:
            cleaned.touch()  # what a phone session does here: stop its run on the phone

    with pytest.raises(StageError, match=r"^took longer than the 1 s limit \(limits.benchmark_s\) in benchmark$"):
        run_isolated("benchmark", work, Limits(None, 1), "limits.benchmark_s")
    assert cleaned.exists()
