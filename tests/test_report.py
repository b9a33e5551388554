"""The report: plots per comparable group, report.html (images embedded) and report.md, best under budget,
the printed table; and one sweep end to end (slow)."""

from __future__ import annotations

import base64
import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest
from conftest import cli
from matplotlib.collections import PathCollection
from sweep_table import EXPECTED_FLAGS, quickstart_table

from compress.flags import flags_column
from compress.plots import (
    accuracy_range,
    collapsed_band,
    comparable_groups,
    pareto_figure,
    point_numbers,
    technique_styles,
    write_plots,
)
from compress.report import budget_lines, format_blocks, format_view, readable, write_report
from compress.results import summarize

HOST = "lenet5 / mnist5k / host:x86_64 / ptl"


class Page(HTMLParser):
    """The images (decoded PNG arrays) and the body rows of each table (by id) of an HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.images, self.rows, self.table, self.in_body = [], {}, None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            head, data = attrs["src"].split(",", 1)
            assert head == "data:image/png;base64"
            self.images.append(matplotlib.image.imread(io.BytesIO(base64.b64decode(data)), format="png"))
        elif tag == "table":
            self.table = attrs.get("id") or f"table{len(self.rows)}"
            self.rows[self.table] = 0
        elif tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows[self.table] += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self.in_body = False


@pytest.fixture
def table() -> pd.DataFrame:
    fixture = quickstart_table()
    return fixture.assign(flags=flags_column(fixture))


def check_html(path: Path, rows: int, images: int) -> str:
    """report.html decodes: `images` PNGs embedded, `rows` body rows in the table of every row."""
    text = path.read_text()
    page = Page(text)
    assert len(page.images) == images
    assert all(img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600 for img in page.images)
    assert page.rows["rows"] == rows
    return text


def test_one_figure_per_group_never_mixing_phones(table):
    groups = dict(comparable_groups(table))
    assert list(groups) == [HOST, "lenet5 / mnist5k / adb / R58M / ptl", "lenet5 / mnist5k / adb / ZY22 / ptl"]
    assert [len(rows) for rows in groups.values()] == [8, 3, 1]  # the failed tucker row is in no figure
    fig = pareto_figure(groups["lenet5 / mnist5k / adb / R58M / ptl"], "R58M", technique_styles(table["technique"]))
    for ax in fig.axes:
        assert sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)) == 3  # scatter


def test_pareto_staircase_goes_through_the_hand_checked_front(table):
    fig = pareto_figure(dict(comparable_groups(table))[HOST], HOST, technique_styles(table["technique"]))
    by_latency, by_size = fig.axes[:2]
    (front,) = [line for line in by_latency.get_lines() if line.get_label() == "Pareto front"]
    # accuracy vs p50: prune_channel 0.9, 0.7, 0.5, prune_magnitude 0.9, none, prune_magnitude 0.5
    assert list(front.get_xdata()) == pytest.approx([0.030, 0.045, 0.070, 0.1207, 0.140, 0.141])
    floor, top = accuracy_range(dict(comparable_groups(table))[HOST])
    low, high = collapsed_band(floor, top)
    assert by_latency.get_ylim() == pytest.approx((low, top)) and high == floor
    assert list(front.get_ydata()) == pytest.approx([(low + high) / 2, 94.5, 96.2, 96.8, 97.0, 97.2])
    # the collapsed prune_channel 0.9 (80%) sits in the band below the rest (94.5-97.2%), listed there by its number
    assert 93.5 < floor < 94.5 and 97.2 < top < 98
    texts = [t.get_text() for t in by_latency.texts]
    assert "collapsed (below the axis): #5 80.0%" in texts
    assert sorted(int(t) for t in texts if t.isdigit()) == list(range(1, 9))  # every point numbered once
    assert by_size.get_xscale() == "log"


def test_points_are_numbered_base_first_then_by_technique_and_ratio(table):
    rows = dict(comparable_groups(table))[HOST]
    numbered = rows.assign(n=point_numbers(rows)).sort_values("n")
    assert numbered["technique"].iloc[0] == "none" and list(numbered["n"]) == list(range(1, 9))
    later = numbered.iloc[1:][["technique", "ratio"]].to_records(index=False).tolist()
    assert later == sorted(later)


def test_seventeen_techniques_get_seventeen_distinct_looks():
    styles = technique_styles([f"technique_{i:02d}" for i in range(17)] + ["none"])
    looks = {(style["color"], style["marker"]) for style in styles.values()}
    assert len(styles) == len(looks) == 18  # 17 techniques and the base


def test_write_plots_writes_one_decodable_png_per_group(table, tmp_path):
    written = write_plots(table, tmp_path)
    assert len(written) == 3 and all(p.parent == tmp_path for p in written.values())
    assert all(matplotlib.image.imread(p).shape[1] > 600 for p in written.values())


def test_best_under_budget_lines_on_the_fixture(table):
    lines = budget_lines(dict(comparable_groups(table))[HOST])
    assert [line.split(":")[0] + ": " + line.split(": ")[1] for line in lines] == [
        "accuracy drop ≤ 1 pt, smallest file: prune_magnitude ratio 0.9",
        "accuracy drop ≤ 1 pt, fastest: prune_channel ratio 0.5",
        "accuracy drop ≤ 3 pt, smallest file: prune_channel ratio 0.7",
        "accuracy drop ≤ 3 pt, fastest: prune_channel ratio 0.7",
    ]
    assert lines[0].endswith("flags: within_noise;no_size_reduction")  # the smallest gzip is not a smaller file
    assert "speedup 2.000 (1.900–2.100)×" in lines[1] and "acc 96.20% (-0.80 pt)" in lines[1]


def test_readable_formats_numbers_for_people(table):
    text = readable(table).iloc[[0, 2, 8]]
    assert list(text["ratio"]) == ["n/a", "0.9", "0.9"]
    assert list(text["acc_top1"]) == ["97.00%", "96.80%", ""]
    assert list(text["size_gzip_bytes"]) == ["230.0K", "60.0K", ""]
    assert list(text["speedup_x"]) == ["1.000 (0.970–1.030)", "1.160 (0.900–1.400)", ""]
    assert text["latency_ms_p50"].iloc[1] == "0.1207 (0.1183–0.1231)"


def test_report_html_is_self_contained_and_md_links_its_plots(table, tmp_path):
    html = check_html(write_report(table, tmp_path), rows=len(table), images=3)
    assert "src='plots/" not in html and "StageError: tucker: the decomposition produced NaN" in html
    assert "within_noise (3 rows): the 95% interval of the speedup reaches into 0.97–1.03" in html
    assert "30.5–34" in html  # R58M's battery temperature range over its benchmarks
    md = (tmp_path / "report.md").read_text()
    links = [line[line.index("](") + 2 : -1] for line in md.splitlines() if line.startswith("![")]
    assert len(links) == 3 and all((tmp_path / link).is_file() for link in links)
    points = [n for t, n in Page(html).rows.items() if t.startswith("points-")]
    assert points == [8, 3, 1]  # a numbered table of points under each figure
    assert "accuracy drop ≤ 3 pt, fastest: prune_channel ratio 0.7" in md
    assert md.count("| prune_channel ") >= 4  # Pareto sets and the table of every row are markdown tables


def test_report_of_a_sweep_where_every_variant_failed(tmp_path):
    failed = quickstart_table().query("status == 'failed'")[["model", "dataset", "device", "technique", "ratio",
                                                             "seed", "status", "error"]]  # fmt: skip
    html = check_html(write_report(failed.assign(flags=flags_column(failed)), tmp_path), rows=1, images=0)
    assert "1 rows: 0 ok, 1 failed, 0 flagged." in html and "the decomposition produced NaN" in html
    assert Page(html).rows["failed"] == 1 and not (tmp_path / "plots").exists()


def test_summarize_writes_flags_csv_and_report_from_result_files(tmp_path, capsys):
    for i, record in enumerate(quickstart_table().to_dict("records")):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "result.json").write_text(json.dumps(record))
    table = summarize(tmp_path)
    assert list(table["flags"]) == EXPECTED_FLAGS
    assert list(pd.read_csv(tmp_path / "summary.csv")["flags"].fillna("")) == EXPECTED_FLAGS
    check_html(tmp_path / "report.html", rows=len(EXPECTED_FLAGS), images=3)
    out = capsys.readouterr().out
    assert f"report: {tmp_path / 'report.html'}" in out and "\nflags:\n  within_noise: the 95% interval" in out
    assert "failed:\n  lenet5/tucker/0.9: StageError" in out


@pytest.mark.slow
def test_sweep_writes_a_report_and_prints_progress_without_control_characters(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "technique=none,prune_magnitude", "ratio=0.5,0.9", f"cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={sweep}", "train.epochs=2", "finetune.epochs=1", "device.iters=20",
            "device.warmup=2", "device.min_time_s=0", "device.rounds=1"]  # fmt: skip
    proc = cli(*args, env={"OMP_NUM_THREADS": "1"}, timeout=900)
    assert proc.returncode == 0, proc.stderr
    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 3  # none ignores ratio: its two jobs are one row
    check_html(sweep / "report.html", rows=len(summary), images=1)
    assert f"report: {sweep / 'report.html'}" in proc.stdout
    assert "job 1/4, lenet5/mnist5k, none ratio 0.5, ETA after the first job" in proc.stdout
    assert "job 4/4, lenet5/mnist5k, prune_magnitude ratio 0.9, ETA " in proc.stdout
    assert "train epoch 2/2 loss" in proc.stdout  # the plain progress lines of training (not a terminal)
    assert not any(c in proc.stdout + proc.stderr for c in "\r\x1b\b")


def test_a_budget_pick_by_peak_memory_where_the_device_measured_it(table):
    rows = dict(comparable_groups(table))[HOST].copy()
    assert not any("least peak memory" in line for line in budget_lines(rows))  # not measured: no such pick
    rows["mem_peak_mb"] = [float(i + 2) for i in range(len(rows))]  # the later rows hold more memory
    within = rows[rows["acc_delta"] >= -0.01 - 1e-9]
    least = within.loc[within["mem_peak_mb"].idxmin()]
    lines = [line for line in budget_lines(rows) if "least peak memory" in line]
    assert len(lines) == 2 and lines[0].startswith("accuracy drop ≤ 1 pt, least peak memory: ")
    assert f"peak memory {least['mem_peak_mb']:g} MB" in lines[0]


def test_formats_side_by_side_per_model_and_device():
    """Hand-made rows: LeNet-5 on one phone in ptl, pte and tflite (none, and quant_static in pte and tflite only),
    on the host in pte alone, a failed tflite row: one view for the phone, none for the host."""
    def row(fmt, technique, acc, size, p50, device="adb:Pixel 8", status="ok"):
        return {"model": "lenet5", "dataset": "mnist5k", "device": device, "device_serial": "S1", "format": fmt,
                "technique": technique, "ratio": math.nan, "seed": 0, "status": status, "acc_top1": acc,
                "size_bytes": size, "latency_ms_p50": p50}  # fmt: skip

    table = pd.DataFrame([
        row("ptl", "none", 0.97, 271_000, 0.154), row("pte", "none", 0.97, 253_000, 0.025),
        row("tflite", "none", 0.969, 250_000, 0.031), row("pte", "quant_static", 0.965, 74_000, 0.026),
        row("tflite", "quant_static", 0.966, 70_000, 0.019), row("ptl", "quant_static", math.nan, math.nan, math.nan,
                                                                  status="failed"),
        row("pte", "none", 0.97, 253_000, 0.080, device="host:x86_64"),
    ])  # fmt: skip
    view = format_view(table[(table["device"] == "adb:Pixel 8") & (table["status"] == "ok")])
    assert list(view["technique"]) == ["none", "quant_static"] and list(view["fastest"]) == ["pte", "tflite"]
    none, int8 = view.iloc[0], view.iloc[1]
    assert (none["acc ptl"], none["acc pte"], none["acc tflite"]) == (0.97, 0.97, 0.969)
    assert (none["size ptl"], none["size tflite"], none["p50 ms ptl"], none["p50 ms tflite"]) == (
        271_000, 250_000, 0.154, 0.031)  # fmt: skip
    assert math.isnan(int8["p50 ms ptl"]) and (int8["p50 ms pte"], int8["size tflite"]) == (0.026, 70_000)
    blocks = format_blocks(table)
    assert [b[1] for b in blocks if b[0] in ("h2", "h3", "p")] == [
        "Formats side by side (accuracy, file size, p50)", "lenet5 / mnist5k / adb:Pixel 8 / S1",
        "Fastest runtime on this device: pte in 1 of 2, tflite in 1 of 2."]  # fmt: skip
    shown_view = blocks[-1][1]
    assert list(shown_view.iloc[0][["acc ptl", "size tflite", "p50 ms pte", "ratio"]]) == [
        "97.00%", "244.1K", "0.025", "n/a"]  # fmt: skip
