"""Sweeps that scale: every launcher computes each stage once on one shared cache and gives the basic launcher's
numbers; a moved cache still hits; two processes racing for a stage: one computes, the other waits; the search."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import cli
from omegaconf import OmegaConf

from compress import cache
from compress.errors import UserError, one_line
from compress.pipeline import once

QUICK = ["train.epochs=1", "finetune.epochs=1", "dataset.limit_train=1000", "dataset.limit_test=300",
         "device.warmup=1", "device.iters=20", "device.min_time_s=0", "device.rounds=1"]  # fmt: skip
SWEEP = ["technique=none,prune_magnitude,prune_channel,quant_dynamic", "ratio=0.5"]
Table = pd.DataFrame
SAME = ["acc_top1", "size_bytes", "macs", "nonzero_params", "params"]  # what must not depend on the launcher


def sweep(tmp_path: Path, name: str, cache_dir: Path, *launcher: str) -> tuple[subprocess.CompletedProcess, Table]:
    out = tmp_path / name
    done = cli("-m", *SWEEP, *QUICK, *launcher, f"cache_dir={cache_dir}", f"hydra.sweep.dir={out}", timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done, pd.read_csv(out / "summary.csv").set_index("technique").sort_index()


@pytest.mark.slow
def test_parallel_launchers_compute_each_stage_once_and_match_the_basic_launcher(tmp_path):
    _, basic = sweep(tmp_path, "basic", tmp_path / "cache-basic")
    for launcher in (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], ["hydra/launcher=submitit_local"]):
        name = launcher[0].split("=")[1]
        _, table = sweep(tmp_path, name, tmp_path / f"cache-{name}", *launcher)
        base_from = list(table["base_from"])  # one job trains; the others wait for it or find it cached
        assert base_from.count("computed") == 1 and set(base_from) <= {"computed", "waited", "cache"}, base_from
        assert len(list((tmp_path / f"cache-{name}" / "base").glob("*.pt"))) == 1
        # the reference and three variants: four artifacts, each computed once
        assert len(list((tmp_path / f"cache-{name}" / "variants").glob("*/metrics.json"))) == 4
        assert set(table["artifact_from"]) <= {"computed", "waited", "cache"}
        pd.testing.assert_frame_equal(table[SAME], basic[SAME])
        assert (table["status"] == "ok").all() and (table["size_gzip_bytes"] == basic["size_gzip_bytes"]).all()


@pytest.mark.slow
def test_a_moved_cache_still_hits_and_an_identical_rerun_computes_nothing(tmp_path):
    _, first = sweep(tmp_path, "first", tmp_path / "cache")
    shutil.move(tmp_path / "cache", tmp_path / "moved")
    _, again = sweep(tmp_path, "again", tmp_path / "moved")
    for stage in ("base_from", "artifact_from", "bench_from"):
        assert set(again[stage]) == {"cache"}, again[stage]
    pd.testing.assert_frame_equal(again[[*SAME, "latency_ms_p50"]], first[[*SAME, "latency_ms_p50"]])


def _race(entry: Path, started: float, sources, fails: bool = False) -> None:
    def work() -> None:
        with open(f"{entry}.attempts", "a") as attempts:
            attempts.write("1")
        time.sleep(1.5)
        if fails:
            raise UserError("bad knob; use another")
        cache.write_json(entry, {"by": os.getpid()})

    cfg = OmegaConf.create({"threads": 1, "limits": {"memory_gb": None, "base_s": 60, "wait_s": 60}})
    time.sleep(max(0.0, started - time.time()))
    try:
        done = once("base", entry, lambda: cache.read_json(entry), work, cfg, lambda: contextlib.nullcontext(0.0))
        sources.put((done.source, done.value["by"]))
    except Exception as exc:  # noqa: BLE001 — the row's error
        sources.put(("failed", one_line(exc)))


def test_two_processes_racing_for_one_stage_one_computes_the_other_waits(tmp_path):
    context = multiprocessing.get_context("fork")
    sources = context.Queue()
    start = time.time() + 0.5
    racers = [context.Process(target=_race, args=(tmp_path / "entry.json", start, sources)) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    results = sorted(sources.get(timeout=5) for _ in racers)
    assert [source for source, _ in results] == ["computed", "waited"]
    assert results[0][1] == results[1][1]  # both read what the one computing process wrote


def test_a_stage_that_fails_fails_the_job_waiting_for_it_without_a_second_attempt(tmp_path):
    context = multiprocessing.get_context("fork")
    sources, entry = context.Queue(), tmp_path / "entry.json"
    start = time.time() + 0.5
    racers = [context.Process(target=_race, args=(entry, start, sources, True)) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    results = [sources.get(timeout=5) for _ in racers]
    assert results == [("failed", "UserError: bad knob; use another")] * 2
    assert Path(f"{entry}.attempts").read_text() == "1"  # the waiting job did not compute it again


@pytest.mark.slow
def test_search_gives_a_row_per_trial_and_a_pareto_set_and_a_failing_trial_does_not_stop_it(tmp_path):
    def search(name: str, techniques: str, trials: int) -> tuple[subprocess.CompletedProcess, pd.DataFrame]:
        done = cli("sweep=search", f"hydra.sweeper.n_trials={trials}", f"technique=choice({techniques})", *QUICK,
                   "finetune.epochs=0", f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / name}",
                   timeout=900)  # fmt: skip
        return done, pd.read_csv(tmp_path / name / "summary.csv")

    done, table = search("ok", "prune_channel,quant_dynamic", 3)
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "ok").glob("*/result.json"))) == 3 and (table["status"] == "ok").all()
    front = done.stdout[done.stdout.index("Pareto set of acc_top1, latency_ms_p50") :].splitlines()
    assert len(front) >= 3 and front[2].split()[0] in {"prune_channel", "quant_dynamic"}

    done, table = search("failing", "prune_slim,prune_channel", 4)  # prune_slim needs BatchNorm: LeNet-5 has none
    assert done.returncode == 1  # a failed variant makes the run exit 1, at the end, after every trial ran
    assert len(list((tmp_path / "failing").glob("*/result.json"))) == 4
    assert {"ok", "failed"} <= set(table["status"]) and "Pareto set" in done.stdout
