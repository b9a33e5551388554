"""`+tracking=mlflow`: a sweep's rows as MLflow runs under one parent run holding the report, read back with MLflow's
own client from a real local store (SQLite, and the file store); a re-run adds no run; a tracker that is down is a
warning line and the row is kept."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from conftest import cli
from mlflow.tracking import MlflowClient

from compress.tracking import SWEEP_TAG, VARIANT_TAG, MlflowTracker, metrics_of

FAST = ["train.epochs=1", "finetune.epochs=1", "device.iters=3", "device.warmup=1", "device.min_time_s=0",
        "device.rounds=1"]  # fmt: skip


def runs(uri: str, experiment: str):
    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id], order_by=["attributes.start_time"])


def sweep(tmp_path, uri: str, name: str):
    folder = tmp_path / name
    proc = cli("-m", "technique=none,prune_magnitude", "ratio=0.5", "+tracking=mlflow", f"tracking.uri={uri}",
               f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={folder}", *FAST)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return folder


@pytest.mark.slow
def test_a_sweep_is_one_parent_run_with_a_child_run_per_row_and_a_rerun_adds_none(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = sweep(tmp_path, uri, "first")
    table = pd.read_csv(folder / "summary.csv")
    logged = runs(uri, "pocketbench")
    [parent] = [r for r in logged if SWEEP_TAG in r.data.tags]
    children = {r.data.params["technique"]: r for r in logged if VARIANT_TAG in r.data.tags}
    assert sorted(children) == ["none", "prune_magnitude"] and len(logged) == 3
    for row in table.itertuples():
        run = children[row.technique]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.data.tags["status"] == "ok"
        assert run.info.status == "FINISHED" and run.data.params["model"] == "lenet5"
        for column in ("acc_top1", "size_bytes", "latency_ms_p50", "latency_ms_p50_lo", "speedup_x", "macs"):
            assert run.data.metrics[column] == pytest.approx(getattr(row, column)), column
    assert children["none"].data.params["ratio"] == "n/a" and children["prune_magnitude"].data.params["ratio"] == "0.5"
    assert children["prune_magnitude"].data.params["technique.steps.prune.scope"] == "layer"  # a knob of the step
    client = MlflowClient(tracking_uri=uri)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "report.html", "report.md", "plots"} <= artifacts  # plots/: where report.md links them
    assert any(a.path.endswith(".png") for a in client.list_artifacts(parent.info.run_id, "plots"))
    assert children["none"].data.metrics["mem_peak_mb"] > 0  # memory is a metric like the others
    assert client.get_run(parent.info.run_id).data.metrics == {"rows": 2.0, "failed": 0.0}

    sweep(tmp_path, uri, "again")  # the same variants, all from the cache
    again = runs(uri, "pocketbench")
    assert sorted(r.info.run_id for r in again if VARIANT_TAG in r.data.tags) == sorted(
        r.info.run_id for r in children.values()
    )  # no second run of a variant
    assert len([r for r in again if SWEEP_TAG in r.data.tags]) == 2  # each sweep folder its parent and report


def row(status: str, **numbers: float) -> dict:
    return {"model": "lenet5", "technique": "prune_channel", "ratio": 0.5, "format": "ptl", "status": status,
            "error": "" if status == "ok" else "UserError: no such layer", "job_dir": "/tmp/0", **numbers}  # fmt: skip


def test_a_row_that_failed_then_worked_fills_its_own_run_and_the_file_store_works(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store behind this switch
    uri = str(tmp_path / "mlruns")
    tracker, params = MlflowTracker(uri, "file-store"), {"model": "lenet5", "technique": "prune_channel"}
    tracker.log_row(row("failed"), params, None)
    [failed] = runs(uri, "file-store")
    assert failed.info.status == "FAILED" and failed.data.tags["error"] == "UserError: no such layer"
    tracker.log_row(row("ok", acc_top1=0.9, size_bytes=1000, latency_ms_p50=float("nan")), params, None)
    tracker.log_row(row("ok", acc_top1=0.8), params, None)  # logged before: nothing changes
    [worked] = runs(uri, "file-store")
    assert worked.info.run_id == failed.info.run_id and worked.info.status == "FINISHED"
    assert worked.data.metrics == {"acc_top1": 0.9, "size_bytes": 1000.0} and worked.data.tags["status"] == "ok"
    history = MlflowClient(tracking_uri=uri).get_metric_history(worked.info.run_id, "acc_top1")
    assert [m.value for m in history] == [0.9]
    other = {**params, "technique": "prune_magnitude"}
    tracker.log_row(row("ok", acc_top1=0.7), other, None)
    assert len(runs(uri, "file-store")) == 2  # other params: another run


def test_metrics_are_the_rows_finite_numbers_less_its_identity_and_bookkeeping():
    numbers = metrics_of(row("ok", acc_top1=0.9, seed=0, waited_s=3.0, speedup_x=math.inf, rounds=5) | {"ok": True})
    assert numbers == {"acc_top1": 0.9, "rounds": 5.0}


def test_the_tracking_uri_comes_from_mlflow_tracking_uri(make_cfg, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert make_cfg("+tracking=mlflow").tracking.uri == "http://mlflow.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert make_cfg("+tracking=mlflow").tracking.uri == "sqlite:///outputs/mlflow.db"


@pytest.mark.slow
def test_a_tracker_that_is_down_is_a_warning_line_and_the_row_is_kept(tmp_path):
    proc = cli("+tracking=mlflow", "tracking.uri=http://127.0.0.1:9", f"cache_dir={tmp_path / 'cache'}",
               f"hydra.run.dir={tmp_path / 'run'}", *FAST, env={"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    warned = [line for line in (proc.stdout + proc.stderr).splitlines() if "MLflow tracking" in line]
    assert len(warned) == 1 and "did not take the row" in warned[0] and "result.json" in warned[0]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert pd.read_csv(tmp_path / "run" / "summary.csv")["status"].tolist() == ["ok"]
