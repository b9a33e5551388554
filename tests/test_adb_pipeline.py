"""The whole path on an emulated phone: export → push → run → parse → rows, from the pipeline and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from adb_emulator.phone import make_fake_binary

from compress.config import build
from compress.pipeline import run_variant
from compress.results import fail, identity

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["train.epochs=1", "finetune.epochs=0", "dataset.limit_train=256", "dataset.limit_test=64"]


def device_overrides(server, phone, tmp_path: Path) -> list[str]:
    binary = make_fake_binary(tmp_path / "speed_benchmark_torch")
    return [
        "device=adb", f"device.binary={binary}", f"device.serial={phone.serial}", f"device.server_port={server.port}",
        "device.warmup=1", "device.iters=3", "device.retry_wait_s=0.1", f"device.lock_dir={tmp_path / 'locks'}",
    ]  # fmt: skip


@pytest.mark.slow
def test_cli_sweep_of_two_variants_on_the_phone(server, phone, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "model=mlp,lenet5", "technique=none", *SMALL, *device_overrides(server, phone, tmp_path)]
    args += [f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"]
    done = subprocess.run([sys.executable, "cli.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(sweep / "summary.csv")
    assert list(table["status"]) == ["ok", "ok"] and set(table["model"]) == {"mlp", "lenet5"}
    assert (table["device"] == "adb:Pixel Emu").all() and (table["device_soc"] == "EMU8450").all()
    assert (table["device_abi"] == "arm64-v8a").all() and (table["android"] == 14).all()
    assert (table["battery_temp_c_before"] == 31.2).all() and (table["latency_ms_p50"] > 0).all()
    runs = [c for c in phone.commands if "--model=" in c]
    assert len(runs) == 2 and all("--input_dims=1,1,28,28" in c and "--report_pep=true" in c for c in runs)


@pytest.mark.slow
def test_dropped_connection_is_retried_then_a_failed_row_and_the_sweep_goes_on(server, phone, tmp_path, make_cfg):
    """retries=1: the first variant drops twice (failed row), the second drops once and then succeeds."""
    phone.drop_when("--model=", 3)
    rows = []
    for model in ("mlp", "lenet5"):
        cfg = make_cfg(f"model={model}", *SMALL, *device_overrides(server, phone, tmp_path), "device.retries=1")
        row = identity(cfg, str(tmp_path))
        try:
            run_variant(cfg, build(cfg.device), row)
        except Exception as exc:  # noqa: BLE001 — what cli.py does: a failure is a row
            fail(row, exc)
        rows.append(row)
    assert rows[0]["status"] == "failed"
    assert "connection to" in rows[0]["error"] and "gave up after 2 attempts" in rows[0]["error"]
    assert "\n" not in rows[0]["error"]
    assert rows[1]["status"] == "ok" and rows[1]["latency_ms_p50"] > 0 and rows[1]["device_serial"] == phone.serial
    assert sum("--model=" in c for c in phone.commands) == 4
