"""The sweep report: `report.md` and a self-contained `report.html` (plots embedded) with, per group of
comparable rows, the Pareto plots, the Pareto set and the best variant under accuracy budgets; the formats of a
model side by side on each device (format_view); then the flags explained (with the rows timed on a busy host),
the phones, every row and the failed rows with their errors."""

from __future__ import annotations

import base64
import html
import math
import numbers
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from compress.cache import atomic_write
from compress.flags import EXPLANATIONS
from compress.pareto import pareto_front
from compress.plots import comparable_groups, point_numbers, slug, write_plots
from compress.profile import backend_shares, per_layer

BUDGETS_PT = (1, 3)  # "accuracy drop ≤ 1 pt / ≤ 3 pt"
PARETO = {"acc_top1": "max", "latency_ms_p50": "min", "size_gzip_bytes": "min"}
ROWS = [  # the table of every row
    "model", "dataset", "device", "format", "technique", "ratio", "seed", "status", "acc_top1", "acc_delta",
    "nonzero_reduction_x", "macs_reduction_x", "size_bytes", "size_gzip_bytes", "compression_x", "mem_peak_mb",
    "mem_planned_kb", "mem_weights_kb", "latency_ms_p50", "speedup_x", "speedup_efficiency", "flags", "error",
]  # fmt: skip
VARIANT = [
    "technique", "ratio", "acc_top1", "acc_delta", "latency_ms_p50", "speedup_x", "size_gzip_bytes", "mem_peak_mb",
    "flags",
]  # fmt: skip
# What a budget pick minimises: the smallest file, the fastest, the least memory at run time.
PICKS = (("smallest file", "size_gzip_bytes"), ("fastest", "latency_ms_p50"), ("least peak memory", "mem_peak_mb"))
PHONE = ["device_serial", "device_model", "device_soc", "device_board", "device_abi", "android"]
TEMPS = ["battery_temp_c_before", "battery_temp_c_after"]
FAILED = ["model", "dataset", "device", "technique", "ratio", "seed", "error"]
BUSY = ["model", "dataset", "device", "format", "technique", "ratio", "host_other_cpu", "host_load_1m",
        "latency_ms_p50", "speedup_x"]  # fmt: skip

# A report is a list of blocks: ("h2"|"h3"|"p", text), ("list", [lines]), ("table", DataFrame, id), ("img", Path)
Block = tuple


def _number(v: object) -> str:
    """4 significant digits; whole numbers ≥ 10,000 (params, MACs) in full; NaN as empty."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        return str(v)
    return f"{v:.0f}" if abs(v) >= 1e4 and float(v).is_integer() else f"{v:.4g}"


def _with_interval(table: pd.DataFrame, col: str, fmt: Callable[[object], str]) -> pd.Series:
    """`value (lo–hi)` where the row has the 95% interval, else the value."""
    lo, hi = table.get(f"{col}_lo"), table.get(f"{col}_hi")
    if lo is None or hi is None:
        return table[col].map(fmt)
    pairs = zip(table[col], lo, hi, strict=True)
    return pd.Series([fmt(v) if pd.isna(a) else f"{fmt(v)} ({fmt(a)}–{fmt(b)})" for v, a, b in pairs], table.index)


FORMATS: dict[str, Callable[[float], str]] = {
    "acc_top1": lambda v: f"{v * 100:.2f}%", "acc_top5": lambda v: f"{v * 100:.2f}%",
    "acc_before_finetune": lambda v: f"{v * 100:.2f}%", "acc_delta": lambda v: f"{v * 100:+.2f} pt",
    "size_bytes": lambda v: f"{v / 1024:.1f}K", "size_gzip_bytes": lambda v: f"{v / 1024:.1f}K",
}  # fmt: skip


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """The table as text for people: accuracies in %, deltas in points, sizes in KB, `n/a` ratios, p50
    and speedup with their 95% intervals, other numbers to 4 significant digits."""
    out = table.astype(object).map(_number)
    for col, fmt in FORMATS.items():
        if col in table:
            out[col] = table[col].map(lambda v, fmt=fmt: "" if pd.isna(v) else fmt(v))
    if "ratio" in table:
        out["ratio"] = table["ratio"].map(lambda v: "n/a" if pd.isna(v) else f"{v:g}")
    for col, fmt in (("latency_ms_p50", _number), ("speedup_x", lambda v: "" if pd.isna(v) else f"{v:.3f}")):
        if col in table:
            out[col] = _with_interval(table, col, fmt)
    return out


def shown(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`columns` of `table` (those it has) as `readable` text."""
    return readable(table)[[c for c in columns if c in table.columns]]


def _variant(row: pd.Series) -> str:
    ratio = "" if pd.isna(row["ratio"]) else f" ratio {row['ratio']:g}"
    return "the base model (none)" if row["technique"] == "none" else f"{row['technique']}{ratio}"


def budget_lines(rows: pd.DataFrame) -> list[str]:
    """For each accuracy budget: the smallest (gzip), the fastest (p50) and the least peak memory variant within it
    (memory where the group's device measured it), with its flags."""
    lines = []
    for pt in BUDGETS_PT:
        within = rows[rows["acc_delta"] >= -pt / 100 - 1e-9]
        for what, col in PICKS:
            head = f"accuracy drop ≤ {pt} pt, {what}: "
            if col not in rows or rows[col].isna().all():
                continue  # not measured on this device
            if within[col].isna().all():
                lines.append(head + "no variant within this budget")
                continue
            best = within.loc[within[col].idxmin()]
            shown = readable(best.to_frame().T).iloc[0]
            flags = f" — flags: {best['flags']}" if best.get("flags") else ""
            lines.append(
                head + f"{_variant(best)}: gzip {shown['size_gzip_bytes']} (file {shown['size_bytes']}), "
                f"p50 {shown['latency_ms_p50']} ms, speedup {shown.get('speedup_x', '')}×, "
                + (f"peak memory {shown['mem_peak_mb']} MB, " if pd.notna(best.get("mem_peak_mb")) else "") +
                f"acc {shown['acc_top1']} ({shown['acc_delta']}){flags}"
            )
    return lines


def numbered(rows: pd.DataFrame, numbers: pd.Series) -> pd.DataFrame:
    """`shown(rows, VARIANT)` led by the `#` each row's point carries in the group's figure, in that order."""
    table = shown(rows, VARIANT)
    table.insert(0, "#", numbers[rows.index])
    return table.sort_values("#")


def group_blocks(label: str, rows: pd.DataFrame, plot: Path | None) -> list[Block]:
    """One group of comparable rows: its plot and the table of its numbered points, its Pareto set, its
    best-under-budget lines."""
    blocks: list[Block] = [("h2", label)]
    numbers = point_numbers(rows)
    if plot is not None:
        points = ("table", numbered(rows, numbers), f"points-{slug(label)}")
        blocks += [("img", plot), ("h3", "Points of the plot"), points]
    front = pareto_front(rows, PARETO)
    blocks += [("h3", "Pareto set (accuracy ↑, p50 latency ↓, gzip size ↓)"), ("table", numbered(front, numbers), "")]
    blocks += [("h3", "Best variant under an accuracy budget"), ("list", budget_lines(rows))]
    return blocks


def format_view(rows: pd.DataFrame) -> pd.DataFrame:
    """Runtimes side by side, from the ok rows of one model, data set and device: one line per technique, ratio (and
    seed) timed in two formats or more, with each format's accuracy, file size and p50, and the fastest of them."""
    keys = [k for k in ("technique", "ratio", "seed") if k in rows]
    formats = list(dict.fromkeys(rows["format"]))
    lines = []
    for key, same in rows.groupby(keys, sort=False, dropna=False):
        by = same.drop_duplicates("format").set_index("format")
        if len(by) < 2:
            continue
        line = dict(zip(keys, key, strict=True))
        for what, col in (("acc", "acc_top1"), ("size", "size_bytes"), ("p50 ms", "latency_ms_p50")):
            line |= {f"{what} {f}": by[col].get(f, math.nan) for f in formats}
        p50 = by["latency_ms_p50"].dropna()
        line["fastest"] = p50.idxmin() if len(p50) else ""
        lines.append(line)
    return pd.DataFrame(lines)


def format_blocks(table: pd.DataFrame) -> list[Block]:
    """Per model, data set and device timed in several formats: their view side by side (format_view) and which
    runtime was fastest how often."""
    ok, blocks = table[table["status"] == "ok"], []
    keys = [k for k in ("model", "dataset", "device", "device_serial") if k in table]
    for key, rows in (ok.groupby(keys, sort=False, dropna=False) if len(ok) and "format" in ok else []):
        view = format_view(rows)
        if not len(view):
            continue
        label = " / ".join(str(v) for v in key if not pd.isna(v))
        wins = view["fastest"][view["fastest"] != ""].value_counts()
        said = ", ".join(f"{f} in {n} of {len(view)}" for f, n in wins.items()) or "no format was timed"
        shown_view = view.astype(object).map(_number)
        for col in view.columns:
            fmt = FORMATS.get("acc_top1" if col.startswith("acc ") else "size_bytes" if col.startswith("size ") else "")
            if fmt:
                shown_view[col] = view[col].map(lambda v, fmt=fmt: "" if pd.isna(v) else fmt(v))
        if "ratio" in view:
            shown_view["ratio"] = view["ratio"].map(lambda v: "n/a" if pd.isna(v) else f"{v:g}")
        blocks += [("h3", label), ("p", f"Fastest runtime on this device: {said}."),
                   ("table", shown_view, f"formats-{slug(label)}")]  # fmt: skip
    return [("h2", "Formats side by side (accuracy, file size, p50)"), *blocks] if blocks else []


def profile_blocks(table: pd.DataFrame) -> list[Block]:
    """Per profiled row (device.profile): where the time went, per layer, in the reference and the variant side by
    side (change_x > 1: the layer got faster), and the share each backend (XNNPACK, portable kernels) ran."""
    blocks: list[Block] = []
    for _, row in table[table["profile"].notna()].iterrows() if "profile" in table else ():
        path = Path(row["profile"])
        if not path.exists():
            continue
        profile = pd.read_csv(path)
        label = f"{row['model']} / {row['dataset']} / {row['device']} / {row['format']}: {_variant(row)} vs the base"
        layers = per_layer(profile).astype(object)
        shares = ["base_share", "variant_share"]
        layers[shares] = layers[shares].map(lambda v: "" if pd.isna(v) else f"{v:.1%}")
        blocks += [("h3", label), ("list", backend_shares(profile)),
                   ("table", layers.map(_number), f"profile-{slug(label)}")]  # fmt: skip
    return [("h2", "Per-layer profiles (ms per run: trimmed means)"), *blocks] if blocks else []


def phone_table(table: pd.DataFrame) -> pd.DataFrame:
    """One line per phone: its fingerprint and the battery temperature range over its benchmarks."""
    phones = table[table["device_serial"].notna()]
    info = phones.drop_duplicates("device_serial")[[c for c in PHONE if c in phones]]
    temps = [c for c in TEMPS if c in phones]
    if temps:
        span = phones.groupby("device_serial", sort=False).agg(low=(temps[0], "min"), high=(temps[-1], "max"))
        text = span["low"].map(_number) + "–" + span["high"].map(_number)
        info = info.assign(battery_temp_c=info["device_serial"].map(text))
    return info.astype(object).map(_number)


def report_blocks(table: pd.DataFrame, plots: dict[str, Path]) -> list[Block]:
    """The whole report of a table with its `flags` column: a summary line, every group, the flags, the
    phones, every row, the failures."""
    failed, flags = table[table["status"] != "ok"], table["flags"].fillna("")
    blocks: list[Block] = [("p", f"{len(table)} rows: {len(table) - len(failed)} ok, {len(failed)} failed, "
                                 f"{(flags != '').sum()} flagged.")]  # fmt: skip
    for label, rows in comparable_groups(table):
        blocks += group_blocks(label, rows, plots.get(label))
    blocks += format_blocks(table)
    blocks += profile_blocks(table)
    counts = flags.str.split(";").explode().value_counts()
    blocks += [("h2", "Flags"), ("list", [f"{flag} ({counts.get(flag, 0)} rows): {why}"
                                          for flag, why in EXPLANATIONS.items()])]  # fmt: skip
    busy = table[flags.str.contains("busy_host")]
    if len(busy):
        blocks += [("h3", "Timed on a busy host (busy_host): rerun these on a quiet machine"),
                   ("table", shown(busy, BUSY), "busy")]  # fmt: skip
    if "device_serial" in table and table["device_serial"].notna().any():
        blocks += [("h2", "Phones"), ("table", phone_table(table), "")]
    blocks += [("h2", "Every row"), ("table", shown(table, ROWS), "rows")]
    if len(failed):
        blocks += [("h2", "Failed rows"), ("table", shown(failed, FAILED), "failed")]
    return blocks


def to_markdown(title: str, blocks: list[Block], folder: Path) -> str:
    out = [f"# {title}"]
    for kind, body, *_ in blocks:
        if kind in ("h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {body}")
        elif kind == "p":
            out.append(body)
        elif kind == "list":
            out.append("\n".join(f"- {line}" for line in body))
        elif kind == "table":
            out.append(body.to_markdown(index=False) if len(body) else "(none)")
        elif kind == "img":
            out.append(f"![{body.stem}]({body.relative_to(folder).as_posix()})")
    return "\n\n".join(out) + "\n"


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:110em}table{border-collapse:collapse;font-size:13px}"
         "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}")  # fmt: skip


def to_html(title: str, blocks: list[Block]) -> str:
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    for kind, body, *rest in blocks:
        if kind in ("h2", "h3", "p"):
            out.append(f"<{kind}>{html.escape(body)}</{kind}>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in body) + "</ul>")
        elif kind == "table":
            out.append(body.to_html(index=False, table_id=rest[0] or None) if len(body) else "<p>(none)</p>")
        elif kind == "img":
            data = base64.b64encode(body.read_bytes()).decode("ascii")
            out.append(f"<img alt='{html.escape(body.stem)}' src='data:image/png;base64,{data}'>")
    return "\n".join(out) + "\n</body></html>\n"


def write_report(table: pd.DataFrame, folder: Path) -> Path:
    """Plots in `folder/plots/`, `report.md` and `report.html` in `folder`; returns the html path."""
    folder = Path(folder)
    blocks = report_blocks(table, write_plots(table, folder / "plots"))
    title = f"pocketbench report: {folder}"
    atomic_write(folder / "report.md", lambda tmp: Path(tmp).write_text(to_markdown(title, blocks, folder)))
    atomic_write(folder / "report.html", lambda tmp: Path(tmp).write_text(to_html(title, blocks)))
    return folder / "report.html"
