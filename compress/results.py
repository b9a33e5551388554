"""The result table: one flat row per variant × device, `result.json` per job, `summary.csv` per sweep."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from compress.cache import read_json, write_json
from compress.errors import UserError

log = logging.getLogger(__name__)

# The user-facing contract (design.md), then extra columns.
COLUMNS = [
    "model", "dataset", "technique", "ratio", "seed", "status", "error",
    "params", "nonzero_params", "macs", "size_bytes", "size_gzip_bytes", "compression_x",
    "acc_top1", "acc_delta", "format", "device", "threads", "qengine",
    "latency_ms_p50", "latency_ms_p90", "latency_ms_mean", "latency_ms_std", "speedup_x",
    "train_s", "compress_s", "finetune_s", "bench_s",
    "acc_top5", "acc_before_finetune", "latency_ms_min", "ratio_applies", "mobile_optimized",
    "base_cached", "cached", "notes", "artifact", "job_dir",
]  # fmt: skip

# Columns that say how a job ran, not what it measured.
BOOKKEEPING = ("job_dir", "cached", "base_cached")

# What the end-of-run table prints (the CSV has every column).
SHOWN = [
    "model", "dataset", "technique", "ratio", "status", "acc_top1", "acc_delta", "nonzero_params",
    "macs", "size_bytes", "size_gzip_bytes", "compression_x", "device", "qengine", "latency_ms_p50", "speedup_x",
]  # fmt: skip


def identity(cfg: DictConfig, job_dir: str) -> dict[str, Any]:
    """The columns every row has, even a failed one."""
    return {
        "model": cfg.model.name, "dataset": cfg.dataset.name, "technique": cfg.technique.name,
        "ratio": cfg.ratio, "seed": cfg.seed, "status": "failed", "error": "",
        "device": cfg.device.name, "job_dir": job_dir,
    }  # fmt: skip


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` — what the `error` column holds."""
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def fail(row: dict, exc: BaseException) -> None:
    """Mark `row` failed; the log gets the traceback unless it is a mistake the user can fix."""
    row |= {"status": "failed", "error": one_line(exc)}
    trace = "" if isinstance(exc, UserError) else "\n" + traceback.format_exc()
    log.error("variant failed: %s%s", row["error"], trace)


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
    shown = table[SHOWN].copy()
    for col in ("size_bytes", "size_gzip_bytes"):
        shown[col] = shown[col].map(lambda b: "" if pd.isna(b) else f"{b / 1024:.1f}K")
    shown = shown.rename(columns={"size_bytes": "size", "size_gzip_bytes": "gzip", "latency_ms_p50": "p50_ms"})
    shown["ratio"] = shown["ratio"].map(lambda r: "n/a" if pd.isna(r) else f"{r:g}")
    text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="")
    errors = [f"  {r.model}/{r.technique}/{r.ratio}: {r.error}" for r in table.itertuples() if r.status == "failed"]
    return text + ("\nfailed:\n" + "\n".join(errors) if errors else "")


def summarize(folder: Path) -> pd.DataFrame:
    """Write `summary.csv` in `folder` from its results and print the table; returns it."""
    table = collect(folder)
    if table.empty:
        print(f"no result.json under {folder}")
        return table
    table.to_csv(Path(folder) / "summary.csv", index=False)
    print(_human(table))
    print(f"summary: {Path(folder) / 'summary.csv'} ({len(table)} rows)")
    return table


def any_failed(table: pd.DataFrame) -> bool:
    return bool(len(table)) and bool((table["status"] == "failed").any())


class SummaryCallback(Callback):
    """At the end of a multirun: summary.csv in the sweep dir, the table printed, exit 1 on failures."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        table = summarize(Path(config.hydra.sweep.dir))
        if any_failed(table):
            raise SystemExit(1)
