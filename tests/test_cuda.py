"""Training on a CUDA GPU, run wherever torch sees one (skipped elsewhere): base training, channel pruning, QAT and
distillation on the GPU give ok rows whose exported files are timed on the CPU; two jobs with one GPU take turns.
Whether there is a GPU is asked in a forked probe (compress/accel.py): this process must not start CUDA itself,
or its forks (the stages) could not use it."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, fast_host

from compress import accel, machine, pipeline

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not accel.seen().gpus, reason="no CUDA GPU")]
FAST = ["train.device=cuda", "train.epochs=3", "dataset.limit_train=2000", "finetune.epochs=1"]


@pytest.mark.parametrize(
    "overrides",
    [["technique=none"], ["technique=prune_channel"], ["technique=qat"],
     ["technique=prune_channel", "finetune.distill=true"], ["technique=none", "train.precision=bf16"]],
)  # fmt: skip
def test_training_on_the_gpu_gives_ok_rows_timed_on_the_cpu(make_cfg, overrides):
    cfg = make_cfg(*FAST, *overrides)
    row: dict = {}
    pipeline.run_variant(cfg, fast_host(), row)
    assert row["status"] == "ok", row.get("error")
    assert row["train_device"] == f"cuda:{accel.seen().gpus[0]}" and row["device"].startswith("host")
    assert row["acc_top1"] > 0.85 and row["latency_ms_p50"] > 0  # the exported file, in its CPU runtime
    assert not torch.cuda.is_initialized()  # the stages used the GPU in their own processes


def test_two_jobs_with_one_gpu_take_turns(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0])
    args = [sys.executable, str(ROOT / "cli.py"), f"cache_dir={tmp_path / 'cache'}", *FAST,
            f"hydra.run.dir={tmp_path / 'run'}"]  # fmt: skip
    gpu = os.environ["CUDA_VISIBLE_DEVICES"]
    with machine.computing(1, [gpu]):  # another job's stage holds the only GPU
        job = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(30)
        assert job.poll() is None and not list(tmp_path.rglob("base/*.pt"))  # waiting, nothing trained
    assert job.wait(600) == 0
    row = json.loads((tmp_path / "run" / "result.json").read_text())
    assert row["status"] == "ok" and row["waited_s"] >= 25  # it took the GPU when the other gave it back
