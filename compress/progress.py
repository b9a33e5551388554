"""The sweep's progress line, `job i/N, model/dataset, technique ratio, ETA`, as a Hydra callback.

Under a parallel or remote launcher (joblib, submitit, ray) `on_job_start`/`on_job_end` run in the worker,
so nothing is kept in process memory across jobs: the submitting process writes the plan (number of jobs,
start time) into the sweep dir once, and each job derives its line from the sweep dir: `i` is
`hydra.job.num + 1`, the jobs done are the `result.json` files written since the start, and the ETA is
the elapsed time per finished job times the jobs still to finish."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from compress.cache import read_json, write_json

log = logging.getLogger("pocketbench")
PLAN = "progress.json"


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep launches: `n_trials` for a sweeper that has it (Optuna), the product of the
    swept values for Hydra's basic sweeper (its own expansion of `hydra.sweeper.params` + the command
    line), None for another sweeper."""
    sweeper = config.hydra.sweeper
    if "n_trials" in sweeper:
        return int(sweeper.n_trials)
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    swept = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
    hydra = GlobalHydra.instance()  # its config loader expands glob() sweeps over config groups
    parser = OverridesParser.create(hydra.config_loader() if hydra.is_initialized() else None)
    overrides = parser.parse_overrides(swept + list(config.hydra.overrides.task))
    return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))


def duration(seconds: float) -> str:
    """`45s`, `4m10s`, `2h05m`."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    return f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def jobs_done(sweep_dir: Path, since: float) -> int:
    """The `result.json` files written under `sweep_dir` since `since` (epoch seconds)."""
    return sum(1 for p in Path(sweep_dir).rglob("result.json") if p.stat().st_mtime >= since)


def eta(elapsed_s: float, done: int, jobs: int | None) -> str:
    """Time left at the rate seen so far (finished jobs per elapsed second, so parallel jobs count)."""
    if jobs is None:
        return "ETA unknown"
    if done == 0:
        return "ETA after the first job"
    return f"ETA {duration(elapsed_s / done * max(jobs - done, 0))}"


def progress_line(config: DictConfig, now: float) -> str:
    """`job 3/28, lenet5/mnist5k, prune_channel ratio 0.5, ETA 1m40s` for the job `config` describes."""
    plan = read_json(Path(config.hydra.sweep.dir) / PLAN) or {}
    jobs, started = plan.get("jobs"), plan.get("started", now)
    of = f"/{jobs}" if jobs else ""
    variant = f"{config.model.name}/{config.dataset.name}, {config.technique.name} ratio {config.ratio}"
    done = jobs_done(Path(config.hydra.sweep.dir), started)
    return f"job {config.hydra.job.num + 1}{of}, {variant}, {eta(now - started, done, jobs)}"


class ProgressCallback(Callback):
    """Logs `job i/N, ..., ETA` when a sweep's job starts and `job i/N finished: status in Xs` when it ends."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        plan = {"jobs": planned_jobs(config), "started": time.time()}
        write_json(Path(config.hydra.sweep.dir) / PLAN, plan)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            self.job_started = time.time()
            log.info(progress_line(config, self.job_started))

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            plan = read_json(Path(config.hydra.sweep.dir) / PLAN) or {}
            of = f"/{plan['jobs']}" if plan.get("jobs") else ""
            row = read_json(Path(config.hydra.runtime.output_dir) / "result.json") or {}
            took = duration(time.time() - self.job_started)
            log.info("job %d%s finished: %s in %s", config.hydra.job.num + 1, of, row.get("status", "no result"), took)
