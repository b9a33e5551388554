"""The CLI end to end in a subprocess: one variant, the cache, failure rows, report, user errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, cli, config_names

FAST = ["train.epochs=3", "device.iters=5", "device.warmup=1", "device.min_time_s=0", "device.rounds=1"]


def run_once(tmp_path: Path, run_dir: str, *overrides: str) -> tuple[subprocess.CompletedProcess, dict]:
    proc = cli(f"cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / run_dir}", *FAST, *overrides)
    return proc, json.loads((tmp_path / run_dir / "result.json").read_text())


@pytest.mark.slow
def test_one_variant_end_to_end_then_cache_hit(tmp_path):
    proc, row = run_once(tmp_path, "first")
    assert proc.returncode == 0, proc.stderr
    assert row["status"] == "ok" and row["acc_top1"] > 0.9 and row["latency_ms_p50"] > 0
    assert row["size_bytes"] == Path(row["artifact"]).stat().st_size
    assert row["base_from"] == "computed" and "lenet5" in proc.stdout  # the row was printed
    (base_file,) = (tmp_path / "cache" / "base").glob("*.pt")
    mtime = base_file.stat().st_mtime_ns

    proc, again = run_once(tmp_path, "second")
    assert proc.returncode == 0, proc.stderr
    assert "base model: cache" in proc.stdout + proc.stderr
    assert (again["base_from"], again["artifact_from"], again["bench_from"]) == ("cache", "cache", "cache")
    assert base_file.stat().st_mtime_ns == mtime
    assert again["acc_top1"] == row["acc_top1"]


@pytest.mark.slow
def test_corrupt_base_cache_is_rebuilt(tmp_path):
    proc, row = run_once(tmp_path, "first")
    (base_file,) = (tmp_path / "cache" / "base").glob("*.pt")
    base_file.write_bytes(b"not a torch file")
    proc, again = run_once(tmp_path, "second")
    assert proc.returncode == 0, proc.stderr
    assert again["status"] == "ok" and again["base_from"] == "computed"
    assert "rebuilding" in proc.stdout + proc.stderr
    assert base_file.stat().st_size > 100_000  # a real state dict again


@pytest.mark.slow
def test_failing_variant_is_a_row_and_the_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "train.optimizer=sgd,bogus", f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}", *FAST)
    assert proc.returncode == 1  # a failed variant makes the run exit non-zero, at the end
    table = pd.read_csv(sweep / "summary.csv")
    assert sorted(table["status"]) == ["failed", "ok"]
    failed = table[table["status"] == "failed"].iloc[0]
    assert "unknown optimizer 'bogus'" in failed["error"] and "\n" not in failed["error"]

    # report rebuilds the table from whatever result.json files exist (here: the ok one only)
    (sweep / "summary.csv").unlink()
    next(p for p in sweep.rglob("result.json") if json.loads(p.read_text())["status"] == "failed").unlink()
    proc = cli("report", str(sweep))
    assert proc.returncode == 0, proc.stderr
    assert list(pd.read_csv(sweep / "summary.csv")["status"]) == ["ok"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model=resnet9000"], "unknown model 'resnet9000'; choose one of:"),
        (["-m", "dataset=mnist5k,nope"], "unknown dataset 'nope'; choose one of:"),
        (["ratio=1.5"], "ratio must be a number in [0, 1)"),
        (["report", "/no/such/dir"], "no such directory"),
    ],
)
def test_user_errors_are_one_line(args, message):
    proc = cli(*args)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {message}")
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_console_script_from_any_directory_gives_the_same_row_as_cli_py(tmp_path):
    script = shutil.which("pocketbench") or str(Path(sys.executable).parent / "pocketbench")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    args = [f"cache_dir={tmp_path / 'cache'}", "technique=prune_channel", *FAST]
    done = subprocess.run([script, *args, f"hydra.run.dir={tmp_path / 'script'}"], cwd=elsewhere,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    proc, row = run_once(tmp_path, "cli", "technique=prune_channel")
    script_row = json.loads((tmp_path / "script" / "result.json").read_text())
    assert row["artifact_from"] == "cache" and row["bench_from"] == "cache"  # the same keys: the same variant
    for column in ("status", "acc_top1", "size_bytes", "macs", "latency_ms_p50", "artifact"):
        assert row[column] == script_row[column], column


@pytest.mark.slow
def test_a_built_wheel_carries_the_cli_and_every_config(tmp_path):
    """A non-editable install (`pip install .`, a wheel) has the configs the console script composes."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "cli.py", "conf", "compress", "adb_bench"):
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, source / name)
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
               str(source)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    names = set(zipfile.ZipFile(next(tmp_path.glob("pocketbench-*.whl"))).namelist())
    configs = {str(p.relative_to(ROOT)) for p in (ROOT / "conf").rglob("*.yaml")}
    assert configs <= names and {"cli.py", "conf/__init__.py", "compress/pipeline.py"} <= names
    assert len(configs) > 40


def test_help_says_what_pocketbench_does_its_commands_presets_and_where_results_go():
    done = cli("--help", timeout=120)
    assert done.returncode == 0 and "powered by Hydra" not in done.stdout
    for command in ("python cli.py report SWEEP_DIR", "python cli.py devices", "python cli.py sensitivity", "-m "):
        assert command in done.stdout, command
    presets = config_names("sweep")
    assert f"sweep: {', '.join(presets)}" in done.stdout  # every preset, listed from conf/sweep
    groups = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir())
    assert all(f"\n{group}: " in done.stdout for group in groups), groups
    assert all(place in done.stdout for place in ("outputs/runs/", "outputs/sweeps/", "cache_dir", "summary.csv"))
