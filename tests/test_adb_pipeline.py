"""The whole path on emulated phones: export → push → run → parse → rows, from the pipeline and the CLI."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from adb_emulator.harness import attached_phone
from adb_emulator.phone import make_fake_binary
from conftest import cli

from adb_bench.errors import DeviceError
from compress.config import build
from compress.pipeline import run_variant
from compress.results import fail, first_columns

SMALL = ["model=mlp", "train.epochs=1", "finetune.epochs=0", "dataset.limit_train=256", "dataset.limit_test=64"]


def device_overrides(server, serial: str, tmp_path: Path) -> list[str]:
    binary = make_fake_binary(tmp_path / "speed_benchmark_torch")
    return [
        "device=adb", f"device.binary={binary}", f"device.serial={serial}", f"device.server_port={server.port}",
        "device.warmup=1", "device.iters=3", "device.rounds=1", "device.retry_wait_s=0.1",
        f"device.lock_dir={tmp_path / 'locks'}",
    ]  # fmt: skip


@pytest.mark.slow
def test_cli_sweep_on_a_pool_times_reference_and_variant_in_one_session(server, phone, tmp_path, cache_dir):
    """device.serial=[A,B]: each variant's session ran on one of the two phones, and the row says which."""
    with attached_phone(server, tmp_path / "b", props={"ro.product.model": "Pixel Emu B"}) as other:
        models = {phone.serial: "adb:Pixel Emu", other.serial: "adb:Pixel Emu B"}
        sweep, pool = tmp_path / "sweep", f"[{phone.serial},{other.serial}]"
        args = ["-m", "technique=none,prune_magnitude", "ratio=0.5", *SMALL, *device_overrides(server, pool, tmp_path)]
        done = cli(*args, f"cache_dir={cache_dir}", f"hydra.sweep.dir={sweep}", timeout=300)
        runs = [c for c in phone.commands + other.commands if "--model=" in c]
    assert done.returncode == 0, done.stderr[-2000:]
    table = pd.read_csv(sweep / "summary.csv")
    assert list(table["status"]) == ["ok", "ok"] and list(table["technique"]) == ["none", "prune_magnitude"]
    assert [models[s] for s in table["device_serial"]] == list(table["device"])
    assert (table["device_soc"] == "EMU8450").all() and (table["android"] == 14).all()
    assert (table["battery_temp_c_before"] == 31.2).all() and (table["power_source"] == "usb").all()
    assert table["notes"].str.contains("energy not measured: the phone is powered by usb and charging").all()
    assert (table["latency_ms_p50"] > 0).all() and (table["speedup_x"] > 0).all()
    assert len(runs) == 3  # none: the reference alone; prune_magnitude: reference and variant, one session
    assert all("--input_dims=1,1,28,28" in c and "--report_pep=true" in c for c in runs)


@pytest.mark.slow
def test_a_pool_hits_the_benchmark_cache_whichever_phone_ran_it(server, phone, tmp_path, make_cfg):
    with attached_phone(server, tmp_path / "b") as other:
        rows = []
        for pool in ([phone.serial, other.serial], [other.serial, phone.serial]):
            overrides = [*SMALL, *device_overrides(server, f"[{pool[0]},{pool[1]}]", tmp_path)]
            cfg = make_cfg(*overrides)
            rows.append(first_columns(cfg, str(tmp_path)))
            run_variant(cfg, build(cfg.device), rows[-1])
        runs = [c for c in phone.commands + other.commands if "--model=" in c]
    assert [r["bench_from"] for r in rows] == ["computed", "cache"] and len(runs) == 1
    assert rows[0]["device_serial"] == rows[1]["device_serial"] and rows[1]["status"] == "ok"


def test_cli_with_no_phone_prints_one_line_and_no_traceback(server, tmp_path, cache_dir):
    binary = make_fake_binary(tmp_path / "speed_benchmark_torch")
    args = [*SMALL, "device=adb", f"device.binary={binary}", f"device.server_port={server.port}"]
    done = cli(*args, f"cache_dir={cache_dir}", f"hydra.run.dir={tmp_path / 'run'}", timeout=300)
    printed = done.stdout + done.stderr
    assert done.returncode == 1 and "Traceback" not in printed and 'File "' not in printed
    said = {line.split("DeviceError: ", 1)[1] for line in printed.splitlines() if "DeviceError: " in line}
    assert said == {"no device attached: plug the phone in with USB debugging enabled, then adb devices"}


@pytest.mark.slow
def test_dropped_connection_is_retried_then_a_failed_row_and_the_sweep_goes_on(server, phone, tmp_path, make_cfg):
    """retries=1: the first variant drops twice (failed row), the second drops once and then succeeds."""
    phone.drop_when("--model=", 3)
    rows = []
    for model in ("mlp", "lenet5"):
        overrides = [*SMALL, f"model={model}", *device_overrides(server, phone.serial, tmp_path), "device.retries=1"]
        cfg = make_cfg(*overrides)
        row = first_columns(cfg, str(tmp_path))
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


def test_a_bad_device_setting_reaches_the_row_as_its_own_one_line_error(make_cfg):
    """Hydra wraps what a constructor raises; build() hands on the constructor's own error."""
    with pytest.raises(DeviceError, match=r"^device.rounds=0 must be between 1 and device.iters=50$"):
        build(make_cfg("device=adb", "device.rounds=0").device)
