"""MLflow tracking, opt-in (`+tracking=mlflow`): every row is one run in an experiment named after the sweep, under a
parent run per sweep folder that holds the sweep's table and report.

The row is on disk (result.json, summary.csv) before the tracker hears of it, and a tracker that fails is one
warning line, never a lost row. A run is found again by the digest of its params (the variant's identity and every
knob): a resumed or repeated sweep adds no run, and a row that failed before and works now fills in its old run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from filelock import FileLock
from hydra.types import RunMode
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from compress.cache import read_json
from compress.config import build
from compress.errors import one_line, trace_log
from compress.flags import row_flags
from compress.results import BOOKKEEPING

log = logging.getLogger(__name__)

# The row's columns that say what the variant is (params, not metrics), and the config groups whose knobs are params.
PARAM_COLUMNS = ("model", "dataset", "technique", "ratio", "seed", "format", "device", "threads", "qengine")
GROUPS = ("model", "dataset", "technique", "train", "finetune", "export", "device")
VARIANT_TAG, SWEEP_TAG = "pocketbench.variant", "pocketbench.sweep_dir"
MAX_PARAM = 6000  # MLflow's longest param value
MAX_TAG = 5000  # the part of an error kept as a tag


def _flat(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flat(value, f"{prefix}.{key}")
    else:
        yield prefix, node


def _text(value: Any) -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else str(value)  # a ratio that does not apply


def params_of(row: dict, config: DictConfig) -> dict[str, str]:
    """The row's identity columns and every knob of the groups that make the variant, as MLflow params."""
    params = {column: _text(row[column]) for column in PARAM_COLUMNS if column in row}
    for group in GROUPS:
        node = OmegaConf.to_container(config[group], resolve=True)
        params |= {key: str(value)[:MAX_PARAM] for key, value in _flat(node, group)}
    return params


def metrics_of(row: dict) -> dict[str, float]:
    """Every measured number of the row (accuracy, sizes, latencies and their intervals, speedups, times)."""
    return {
        column: float(value) for column, value in row.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        and column not in PARAM_COLUMNS + BOOKKEEPING
    }  # fmt: skip


def digest(params: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:32]


def _artifact_root(uri: str) -> str | None:
    """`mlartifacts/` beside a local SQLite database; None (MLflow's or the server's choice) for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).resolve().parent / "mlartifacts").as_uri()


class MlflowTracker:
    """Rows and sweeps as MLflow runs, through MLflow's own client (any tracking URI it takes: `sqlite:///FILE`,
    a folder with MLFLOW_ALLOW_FILE_STORE=true, `http://server:5000`)."""

    def __init__(self, uri: str, experiment: str, log_artifact: bool = False):
        self.uri, self.name, self.log_artifact = uri, experiment, log_artifact
        self.client = MlflowClient(tracking_uri=uri)
        self._experiment: str | None = None

    @property
    def experiment(self) -> str:
        """The experiment's id, created on first use (its artifacts beside a local database, not in the working
        directory; a server keeps them where it is set to)."""
        if self._experiment is None:
            found = self.client.get_experiment_by_name(self.name)
            where = _artifact_root(self.uri)
            self._experiment = found.experiment_id if found else self.client.create_experiment(self.name, where)
        return self._experiment

    def _find(self, tag: str, value: str):
        runs = self.client.search_runs([self.experiment], filter_string=f"tags.`{tag}` = '{value}'", max_results=1)
        return runs[0] if runs else None

    def start_sweep(self, sweep_dir: Path) -> None:
        """The sweep's parent run (the same one again when a sweep resumes in its folder)."""
        if self._find(SWEEP_TAG, str(sweep_dir)) is None:
            self.client.create_run(self.experiment, run_name=str(sweep_dir), tags={SWEEP_TAG: str(sweep_dir)})

    def log_row(self, row: dict, params: dict[str, str], sweep_dir: Path | None) -> None:
        """The row as a run: params, metrics, tags (status, error, flags), optionally the exported file."""
        key = digest(params)
        run = self._find(VARIANT_TAG, key)
        if run is not None and run.data.tags.get("status") == "ok":
            return  # measured and logged before: a resumed sweep adds nothing
        parent = self._find(SWEEP_TAG, str(sweep_dir)) if sweep_dir else None
        name = "/".join(params.get(c, "") for c in ("model", "technique", "ratio", "format"))
        if run is None:
            run_id = self.client.create_run(self.experiment, run_name=name, tags={VARIANT_TAG: key}).info.run_id
            self.client.log_batch(run_id, params=[Param(k, v) for k, v in params.items()])
        else:
            run_id = run.info.run_id
        tags = {
            "status": row["status"], "error": row.get("error", "")[:MAX_TAG], "flags": ";".join(row_flags(row)),
            "job_dir": str(row.get("job_dir", "")),
        } | ({"mlflow.parentRunId": parent.info.run_id} if parent else {})  # fmt: skip
        stamp = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in metrics_of(row).items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])  # fmt: skip
        if self.log_artifact and row.get("artifact") and Path(row["artifact"]).is_file():
            self.client.log_artifact(run_id, row["artifact"])
        self.client.set_terminated(run_id, "FINISHED" if row["status"] == "ok" else "FAILED")

    def end_sweep(self, sweep_dir: Path, rows: int, failed: int) -> None:
        """The sweep's table, report and plots on its parent run, and its counts."""
        parent = self._find(SWEEP_TAG, str(sweep_dir))
        if parent is None:
            return
        run_id = parent.info.run_id
        for path in sorted(sweep_dir.iterdir()):
            if path.suffix in (".csv", ".html", ".md"):
                self.client.log_artifact(run_id, str(path))
        if (sweep_dir / "plots").is_dir():  # where report.md links its figures from
            self.client.log_artifacts(run_id, str(sweep_dir / "plots"), "plots")
        stamp = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric("rows", rows, stamp, 0), Metric("failed", failed, stamp, 0)])
        self.client.set_terminated(run_id, "FINISHED")


_trackers: dict[str, MlflowTracker] = {}  # one client per process and store (a launcher runs many jobs in one)


def _tracker(config: DictConfig) -> MlflowTracker:
    experiment = config.tracking.experiment or config.hydra.runtime.choices.get("sweep") or "pocketbench"
    uri = str(config.tracking.uri)
    if (uri, experiment) not in _trackers:
        _trackers[uri, experiment] = build(config.tracking, experiment=experiment)
    return _trackers[uri, experiment]


def _guarded(config: DictConfig, what: str, call) -> None:
    """`call(tracker)`; a failure is one warning line (traceback in the job log)."""
    lock = Path(config.hydra.sweep.dir if config.hydra.mode == RunMode.MULTIRUN else config.hydra.run.dir)
    try:
        lock.mkdir(parents=True, exist_ok=True)
        with FileLock(lock / "tracking.lock"):  # parallel jobs of a sweep: one parent, one experiment, no twin runs
            call(_tracker(config))
    except Exception as exc:  # noqa: BLE001 — the tracker never costs a row
        log.warning("MLflow tracking (%s) did not take the %s: %s; it is in result.json and summary.csv",
                    config.tracking.uri, what, one_line(exc))  # fmt: skip
        trace_log.debug("traceback of the tracking failure above:\n%s", traceback.format_exc())


def sweep_started(config: DictConfig) -> None:
    _guarded(config, "sweep", lambda tracker: tracker.start_sweep(Path(config.hydra.sweep.dir).resolve()))


def row_written(config: DictConfig) -> None:
    """After the job wrote its result.json: that row as a run."""
    row = read_json(Path(config.hydra.runtime.output_dir) / "result.json")
    if row is None:
        return
    sweep = Path(config.hydra.sweep.dir).resolve() if config.hydra.mode == RunMode.MULTIRUN else None
    _guarded(config, "row", lambda tracker: tracker.log_row(row, params_of(row, config), sweep))


def sweep_ended(config: DictConfig, rows: int, failed: int) -> None:
    _guarded(config, "report", lambda tracker: tracker.end_sweep(Path(config.hydra.sweep.dir).resolve(), rows, failed))
