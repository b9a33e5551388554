"""The result table: one flat row per variant × device, `result.json` per job, `summary.csv` per sweep."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
from filelock import FileLock
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from compress.cache import atomic_write, read_json, write_json
from compress.errors import one_line, trace_log
from compress.flags import EXPLANATIONS, flags_column
from compress.search import answer

log = logging.getLogger(__name__)

# The user-facing contract (design.md), then extra columns.
COLUMNS = [
    "model", "dataset", "technique", "ratio", "seed", "status", "error", "flags",
    "params", "nonzero_params", "macs", "size_bytes", "size_gzip_bytes", "compression_x",
    "mem_peak_mb", "mem_planned_kb", "mem_weights_kb",
    "acc_top1", "acc_delta", "format", "device", "threads", "qengine",
    "latency_ms_p50", "latency_ms_p90", "latency_ms_mean", "latency_ms_std", "speedup_x",
    "train_s", "compress_s", "finetune_s", "bench_s", "train_device", "train_precision",
    "latency_ms_p50_lo", "latency_ms_p50_hi", "speedup_x_lo", "speedup_x_hi", "ref_latency_ms_p50",
    "latency_ms_p50_raw", "call_overhead_ms", "rounds",
    "macs_reduction_x", "speedup_efficiency", "nonzero_reduction_x",
    "acc_top5", "acc_before_finetune", "latency_ms_min", "iters", "host_load_1m", "host_other_cpu",
    "cpu_model", "cpu_features", "ratio_applies",
    "mobile_optimized", "bytecode_version", "delegate", "notes", "artifact", "profile", "profile_ms_p50", "profile_s",
    "base_from", "artifact_from", "bench_from", "profile_from", "waited_s", "job_dir",
]  # fmt: skip

# Columns that say how a job ran, not what it measured.
BOOKKEEPING = ("job_dir", "base_from", "artifact_from", "bench_from", "profile_from", "waited_s")

# What the end-of-run table prints (the CSV has every column).
SHOWN = [
    "model", "dataset", "technique", "ratio", "status", "acc_top1", "acc_delta", "nonzero_reduction_x",
    "macs_reduction_x", "size_bytes", "size_gzip_bytes", "compression_x", "mem_peak_mb", "format", "device",
    "qengine", "latency_ms_p50", "speedup_x", "flags",
]  # fmt: skip
HEADERS = {
    "acc_top1": "acc", "nonzero_reduction_x": "nonzero_x", "macs_reduction_x": "macs_x", "size_bytes": "size",
    "size_gzip_bytes": "gzip", "mem_peak_mb": "mem_mb", "latency_ms_p50": "p50_ms (95% CI)",
    "speedup_x": "speedup (95% CI)",
}  # fmt: skip


def first_columns(cfg: DictConfig, job_dir: str) -> dict[str, Any]:
    """The columns every row has, even a failed one: what the variant is, and where its job ran."""
    return {
        "model": cfg.model.name, "dataset": cfg.dataset.name, "technique": cfg.technique.name,
        "ratio": cfg.ratio, "seed": cfg.seed, "status": "failed", "error": "",
        "format": cfg.export.name, "device": cfg.device.name, "job_dir": job_dir,
    }  # fmt: skip


def fail(row: dict, exc: BaseException) -> None:
    """Mark `row` failed: one line on the terminal and in the log, the traceback in the job's log file only."""
    row |= {"status": "failed", "error": one_line(exc)}
    log.error("variant failed: %s", row["error"])
    trace_log.debug("traceback of the failure above:\n%s", traceback.format_exc())


def write_result(row: dict, job_dir: Path) -> None:
    write_json(Path(job_dir) / "result.json", row)


def _job_order(path: Path) -> list:
    """Sort key putting Hydra job dirs in job order (2 before 10)."""
    return [int(part) if part.isdigit() else part for part in path.parts]


def collect(folder: Path) -> pd.DataFrame:
    """Every `result.json` under `folder` (a sweep dir, or a tree of them) as one table, in job order.

    Jobs that ran the same variant (a technique that ignores `ratio`, swept over several ratios) are
    one row: they differ only in their job bookkeeping."""
    paths = sorted(Path(folder).rglob("result.json"), key=_job_order)
    table = pd.DataFrame([r for p in paths if (r := read_json(p)) is not None])
    if table.empty:
        return table
    table = table.drop_duplicates(subset=[c for c in table.columns if c not in BOOKKEEPING])
    extra = [c for c in table.columns if c not in COLUMNS]
    return table.reindex(columns=COLUMNS + extra)


def _human(table: pd.DataFrame) -> str:
    """The end-of-run table (SHOWN columns as `readable` text), then the failed rows' errors and a line
    for each flag that fired."""
    from compress.report import shown  # matplotlib (the report's plots) loads only when a table is printed

    text = shown(table, SHOWN).rename(columns=HEADERS).to_string(index=False)
    errors = [f"  {r.model}/{r.technique}/{r.ratio}: {r.error}" for r in table.itertuples() if r.status == "failed"]
    fired = {flag for cell in table["flags"] for flag in cell.split(";")}
    legend = [f"  {flag}: {why}" for flag, why in EXPLANATIONS.items() if flag in fired]
    return "\n".join([text] + (["failed:", *errors] if errors else []) + (["flags:", *legend] if legend else []))


def write_summary(folder: Path) -> pd.DataFrame:
    """The table of the `result.json` files under `folder`, with its `flags` column, written as `summary.csv`
    (nothing when there is no result yet); returns it."""
    with FileLock(Path(folder) / "summary.csv.lock"):  # parallel jobs end together: the newest table wins
        table = collect(folder)
        if not table.empty:
            table["flags"] = flags_column(table)
            atomic_write(Path(folder) / "summary.csv", lambda tmp: table.to_csv(tmp, index=False))
    return table


def summarize(folder: Path) -> pd.DataFrame:
    """`summary.csv`, the plots and the report in `folder`, from the `result.json` files under it; prints the
    table and the paths; returns the table."""
    folder = Path(folder)
    table = write_summary(folder)
    if table.empty:
        print(f"no result.json under {folder}")
        return table
    from compress.report import write_report

    report = write_report(table, folder)
    print(_human(table))
    print(f"summary: {folder / 'summary.csv'} ({len(table)} rows)")
    print(f"report: {report}")
    return table


def any_failed(table: pd.DataFrame) -> bool:
    return bool(len(table)) and bool((table["status"] == "failed").any())


def _track(config: DictConfig, event: str, *args: Any) -> None:
    """Tell the tracker (`+tracking=mlflow`) that a sweep started, a row was written or a sweep ended; MLflow loads
    only then."""
    if config.get("tracking") is None:
        return
    try:
        from compress import tracking
    except ImportError as exc:
        log.warning("+tracking=mlflow needs MLflow (%s): pip install -e '.[mlflow]'", exc)
        return
    getattr(tracking, event)(config, *args)


class SummaryCallback(Callback):
    """summary.csv in the sweep dir after every job (so it exists whatever happens to the sweep; under parallel
    launchers this runs in the worker), and at the end of a multirun the table, the search's answer, exit 1 on
    failures (this runs on the submitting machine, from the result.json files in the sweep dir). With tracking on,
    the tracker hears of each row after it is on disk, and gets the sweep's report at the end."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _track(config, "sweep_started")

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(Path(config.hydra.sweep.dir))
        _track(config, "row_written")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table = summarize(Path(config.hydra.sweep.dir))
        failed = int((table["status"] == "failed").sum()) if len(table) else 0
        _track(config, "sweep_ended", len(table), failed)
        if config.get("search") is not None and not table.empty:
            print(answer(config.search, table))
        if any_failed(table):
            raise SystemExit(1)
