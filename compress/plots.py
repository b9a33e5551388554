"""Pareto plots (PNG): accuracy against p50 latency and against gzip size, one figure per group of rows
that may be compared (same model, data set, device, phone and format)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
from adjustText import adjust_text
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # no pyplot: figures are drawn by the Agg canvas, no GUI, no global state
from matplotlib.ticker import FuncFormatter

from compress.cache import atomic_write
from compress.flags import COLLAPSE
from compress.pareto import pareto_front

# Rows that may share a figure, a Pareto set or a budget pick: never two phones, devices or formats.
GROUP = ("model", "dataset", "device", "device_serial", "format")
COLOURS = 10  # matplotlib's default cycle, C0-C9
MARKERS = "osD^vP<X>ph"
BASE = "none"


def comparable_groups(table: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """The ok rows of `table` split by GROUP (the columns it has), each with a label like
    `lenet5 / mnist5k / host:x86_64 / ptl`, in order of first appearance."""
    ok = table[table["status"] == "ok"]
    keys = [col for col in GROUP if col in ok.columns]
    found = ok.groupby(keys, sort=False, dropna=False) if len(ok) else []
    return [(" / ".join(str(v) for v in key if not pd.isna(v)), rows) for key, rows in found]


def technique_styles(techniques: Iterable[str]) -> dict[str, dict]:
    """A colour-and-marker pair per technique, never repeated (colour i mod 10, marker i div 10: distinct for up to
    100 techniques); sorted, so a technique looks the same in every figure. The base model is a black star."""
    styles = {BASE: {"color": "black", "marker": "*", "s": 180, "zorder": 3}}
    others = sorted(t for t in set(techniques) if t != BASE)
    for i, name in enumerate(others):
        marker = MARKERS[i // COLOURS % len(MARKERS)]
        styles[name] = {"color": f"C{i % COLOURS}", "marker": marker, "s": 50, "zorder": 2}
    return styles


def point_numbers(rows: pd.DataFrame) -> pd.Series:
    """The number each row's point carries in the figures and in the report's table of points: 1 is the base
    model, then by technique and ratio."""
    order = rows.assign(_base=rows["technique"] != BASE).sort_values(["_base", "technique", "ratio"], kind="stable")
    return pd.Series(range(1, len(rows) + 1), index=order.index).reindex(rows.index)


def accuracy_range(rows: pd.DataFrame) -> tuple[float, float]:
    """The accuracy axis (%): around the rows that did not collapse (more than COLLAPSE below the base), so
    those fill the plot; the collapsed rows go in a band below it, their accuracies listed there."""
    acc = rows["acc_top1"] * 100
    kept = acc[~(rows["acc_delta"] < -COLLAPSE)]
    low, high = (kept if len(kept) else acc).min(), acc.max()
    pad = max(0.25, 0.08 * (high - low))
    return low - pad, high + pad


def collapsed_band(floor: float, top: float) -> tuple[float, float]:
    """Where the collapsed rows are drawn: a band just below the accuracy axis' floor."""
    return floor - 0.1 * (top - floor), floor


def _panel(ax: Axes, rows: pd.DataFrame, x: str, styles: dict[str, dict], span: tuple[float, float],
           scale: float = 1.0) -> None:  # fmt: skip
    """Accuracy (%) against column `x` (× `scale`): a marker per technique with its point number beside it (moved
    apart by adjustText), the collapsed rows (below `span`'s floor) as one marked group in a band under the axis,
    the base accuracy dotted and the Pareto front as a staircase."""
    floor, top = span
    low, high = collapsed_band(floor, top)

    def drawn(acc: pd.Series) -> pd.Series:  # where an accuracy is drawn: collapsed ones mid-band
        return acc.where(acc >= floor, (low + high) / 2)

    numbers, texts, fallen = point_numbers(rows), [], []
    for name, part in rows.groupby("technique", sort=True):
        xs, acc = part[x] * scale, part["acc_top1"] * 100
        ys = drawn(acc)
        if x == "latency_ms_p50" and {"latency_ms_p50_lo", "latency_ms_p50_hi"} <= set(part.columns):
            spread = [(xs - part["latency_ms_p50_lo"]).clip(lower=0), (part["latency_ms_p50_hi"] - xs).clip(lower=0)]
            ax.errorbar(xs, ys, xerr=spread, fmt="none", ecolor=styles[name]["color"], alpha=0.5, capsize=2)
        ax.scatter(xs, ys, label="base model" if name == BASE else name, clip_on=False, **styles[name])
        for i, xv, yv, a in zip(part.index, xs, ys, acc, strict=True):
            texts.append(ax.text(xv, yv, str(numbers[i]), fontsize=7, zorder=4))
            fallen += [(numbers[i], a)] if a < floor else []
    if fallen:
        ax.axhspan(low, high, color="grey", alpha=0.15, linewidth=0)
        listed = ", ".join(f"#{n} {a:.1f}%" for n, a in sorted(fallen))
        ax.text(0.99, high, f"collapsed (below the axis): {listed}", transform=ax.get_yaxis_transform(),
                ha="right", va="bottom", fontsize=7, color="dimgrey")  # fmt: skip
    ax.set_ylim(low if fallen else floor, top)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}" if v >= floor else ""))
    base_acc = ((rows["acc_top1"] - rows["acc_delta"]) * 100).median()
    if not math.isnan(base_acc):
        ax.axhline(base_acc, color="grey", linestyle=":", linewidth=1, label="base accuracy")
    front = pareto_front(rows, {x: "min", "acc_top1": "max"}).sort_values(x)
    ax.step(front[x] * scale, drawn(front["acc_top1"] * 100), where="post", color="grey", linewidth=1.2,
            label="Pareto front")  # fmt: skip
    ax.grid(True, alpha=0.3)
    adjust_text(texts, ax=ax, expand=(2.2, 2.2))


def _leading_digit(v: float) -> int:
    return round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0


def pareto_figure(rows: pd.DataFrame, title: str, styles: dict[str, dict]) -> Figure:
    """One figure of comparable rows: accuracy vs p50 latency (left) and vs gzip size on a log axis (right)."""
    fig = Figure(figsize=(13, 5.2), layout="constrained")
    by_latency, by_size = fig.subplots(1, 2, sharey=True)
    by_size.set_xscale("log")  # before the points: their numbers are placed on the final axes
    span = accuracy_range(rows)
    _panel(by_latency, rows, "latency_ms_p50", styles, span)
    by_latency.set(xlabel="p50 latency (ms; bars: 95% interval)", ylabel="top-1 accuracy (%)")
    _panel(by_size, rows, "size_gzip_bytes", styles, span, scale=1 / 1024)
    by_size.set(xlabel="gzip size (KB, log scale)")
    by_size.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, 100 rather than 10¹, 10²
    by_size.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if _leading_digit(v) in (2, 5) else ""))
    handles, labels = by_latency.get_legend_handles_labels()
    first = sorted(range(len(labels)), key=lambda i: labels[i] != "base model")  # the base model leads the legend
    fig.legend([handles[i] for i in first], [labels[i] for i in first], loc="outside right upper", fontsize=8)
    fig.suptitle(f"{title} — numbers next to points: the report's table of points")
    return fig


def slug(label: str) -> str:
    """A file-name-safe version of a group label."""
    return re.sub(r"[^\w.-]+", "_", label).strip("_") or "all"


def write_plots(table: pd.DataFrame, folder: Path) -> dict[str, Path]:
    """One PNG per comparable group of ok rows in `folder`: {group label: path}."""
    groups = comparable_groups(table)
    styles = technique_styles([t for _, rows in groups for t in rows["technique"]])
    written = {}
    for label, rows in groups:
        fig = pareto_figure(rows, label, styles)
        path = Path(folder) / f"pareto_{slug(label)}.png"
        atomic_write(path, lambda tmp, fig=fig: fig.savefig(tmp, format="png", dpi=110))
        written[label] = path
    return written


def sensitivity_figure(table: pd.DataFrame, title: str) -> Figure:
    """Sensitivity curves: test accuracy against the ratio one layer alone is pruned at, one line per layer."""
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for layer, rows in table.groupby("layer", sort=False):
        ax.plot(rows["ratio"], rows["acc_top1"], marker="o", ms=3, label=f"{layer} ({rows['size'].iloc[0]})")
    ax.set(xlabel="ratio pruned (this layer alone, no fine-tune)", ylabel="test accuracy (top-1)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncols=2 if table["layer"].nunique() > 12 else 1)
    return fig
