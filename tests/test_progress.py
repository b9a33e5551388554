"""Progress: the training bar (a terminal only; plain log lines elsewhere) and the sweep's `job i/N ... ETA`
line derived from the sweep dir."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write
from torch import nn
from torch.utils.data import TensorDataset

from compress import progress
from compress.progress import ProgressCallback, duration, eta, planned_jobs, progress_line
from compress.train import Recipe, fit

CONTROL = "\r\x1b\b"
ROOT = Path(__file__).resolve().parents[1]
TECHNIQUES = list((ROOT / "conf" / "technique").glob("*.yaml"))


class Slow(nn.Module):
    """Takes `seconds` per forward, so a bar (redrawn at most every 0.1 s) has something to show."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.seconds)
        return x


def tiny_fit(seconds_per_batch: float = 0.0) -> None:
    """Two epochs of a linear model on 64 random 8x8 images, 4 batches each, labelled `fine-tune`."""
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,)))
    model = nn.Sequential(Slow(seconds_per_batch), nn.Flatten(), nn.Linear(64, 3))
    fit(model, data, Recipe(epochs=2, lr=0.1, batch_size=16), 0, label="fine-tune")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_training_off_a_terminal_writes_plain_log_lines_only(capsys, caplog):
    with caplog.at_level(logging.INFO, logger="compress.train"):
        tiny_fit()
    out = capsys.readouterr()
    assert not any(c in out.out + out.err for c in CONTROL)
    lines = [m.rsplit(" ", 1)[0] for m in caplog.messages if "epoch" in m]
    assert lines == ["fine-tune epoch 1/2 loss", "fine-tune epoch 2/2 loss"]


def test_training_on_a_terminal_draws_a_bar_with_epoch_and_loss(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr("sys.stdout", terminal)
    tiny_fit(seconds_per_batch=0.06)
    text = terminal.getvalue()
    assert "\r" in text and "fine-tune: " in text and "/8 [" in text  # 2 epochs x 4 batches
    assert "batch/s, epoch 2/2 loss " in text


@pytest.mark.parametrize(
    ("preset", "command_line", "jobs"),
    [
        ([], ["technique=cp"], 1),
        ([], ["technique=none,cp,svd", "ratio=0.3,0.5", "seed=0,1", "train.epochs=2"], 12),
        (["sweep=quickstart"], [], 2 * (len(TECHNIQUES) - 1)),  # glob(*, exclude=[prune_slim]) x 2 ratios
        (["sweep=quickstart"], ["technique=none,cp"], 4),  # the command line replaces the preset's list
    ],
)
def test_planned_jobs_expands_the_sweep_like_the_basic_sweeper(preset, command_line, jobs):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):  # as in a run: Hydra is initialized
        cfg = compose("config", preset, return_hydra_config=True)
        with read_write(cfg), open_dict(cfg):
            cfg.hydra.overrides.task = preset + command_line  # compose refuses sweeps; a multirun keeps them here
        assert planned_jobs(cfg) == jobs


def test_planned_jobs_of_other_sweepers():
    assert planned_jobs(OmegaConf.create({"hydra": {"sweeper": {"_target_": "x.OptunaSweeper", "n_trials": 30}}})) == 30
    assert planned_jobs(OmegaConf.create({"hydra": {"sweeper": {"_target_": "x.SomeOtherSweeper"}}})) is None


def job_config(sweep, num: int, technique: str = "cp", ratio: float = 0.5):
    return OmegaConf.create({
        "model": {"name": "lenet5"}, "dataset": {"name": "mnist5k"}, "technique": {"name": technique},
        "ratio": ratio, "hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}, "job": {"num": num},
                                  "runtime": {"output_dir": str(sweep / str(num))}},
    })  # fmt: skip


def test_progress_line_from_the_sweep_dir(tmp_path, monkeypatch):
    started = time.time() - 30
    (tmp_path / "progress.json").write_text(json.dumps({"jobs": 4, "started": started}))
    for job, age in (("0", 20), ("1", 5), ("old", 3600)):  # "old": from before this sweep started
        (tmp_path / job).mkdir()
        (tmp_path / job / "result.json").write_text("{}")
        os.utime(tmp_path / job / "result.json", (time.time() - age, time.time() - age))
    # 2 jobs done in 30 s, 2 to go: 30 s left
    assert progress_line(job_config(tmp_path, 2), started + 30) == "job 3/4, lenet5/mnist5k, cp ratio 0.5, ETA 30s"


def test_progress_line_without_a_plan_still_numbers_the_job(tmp_path):
    assert progress_line(job_config(tmp_path, 6), time.time()) == "job 7, lenet5/mnist5k, cp ratio 0.5, ETA unknown"


def test_callback_logs_start_and_end_of_each_job(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(progress, "planned_jobs", lambda config: 2)
    callback = ProgressCallback()
    callback.on_multirun_start(job_config(tmp_path, 0))
    with caplog.at_level(logging.INFO, logger="pocketbench"):
        for num in range(2):
            config = job_config(tmp_path, num, technique=["none", "cp"][num])
            callback.on_job_start(config)
            (tmp_path / str(num)).mkdir()
            (tmp_path / str(num) / "result.json").write_text(json.dumps({"status": "ok"}))
            callback.on_job_end(config, job_return=None)
    assert caplog.messages[0] == "job 1/2, lenet5/mnist5k, none ratio 0.5, ETA after the first job"
    assert caplog.messages[1].startswith("job 1/2 finished: ok in ")
    assert caplog.messages[2].startswith("job 2/2, lenet5/mnist5k, cp ratio 0.5, ETA ")
    assert caplog.messages[3].startswith("job 2/2 finished: ok in ")


def test_callback_is_silent_outside_a_sweep(tmp_path, caplog):
    config = job_config(tmp_path, 0)
    config.hydra.mode = RunMode.RUN
    with caplog.at_level(logging.INFO, logger="pocketbench"):
        ProgressCallback().on_job_start(config)
    assert caplog.messages == []


@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0s"), (45, "45s"), (250, "4m10s"), (7500, "2h05m")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_eta_counts_finished_jobs_per_elapsed_time():
    assert eta(60, done=0, jobs=10) == "ETA after the first job"
    assert eta(60, done=3, jobs=10) == "ETA 2m20s"  # 20 s per job, 7 to go
    assert eta(60, done=10, jobs=10) == "ETA 0s"
    assert eta(60, done=3, jobs=None) == "ETA unknown"
