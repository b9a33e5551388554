"""The flags column: each flag fires where it should and not where it should not, at its thresholds."""

from __future__ import annotations

import math

import pytest
from sweep_table import EXPECTED_FLAGS, quickstart_table

from compress.flags import EXPLANATIONS, flags_column, row_flags

# An ok variant that is measurably faster, smaller and as accurate: no flag.
CLEAN = {
    "technique": "prune_channel", "status": "ok", "speedup_x": 2.0, "speedup_x_lo": 1.8, "speedup_x_hi": 2.2,
    "macs_reduction_x": 3.0, "nonzero_reduction_x": 3.0, "compression_x": 3.0, "acc_delta": -0.01,
}  # fmt: skip


@pytest.mark.parametrize(
    ("change", "flags"),
    [
        ({}, []),
        ({"speedup_x": 1.0, "speedup_x_lo": 0.99, "speedup_x_hi": 1.01}, ["within_noise", "no_real_speedup"]),
        ({"speedup_x": 1.0, "speedup_x_lo": 0.99, "speedup_x_hi": 1.01, "macs_reduction_x": 1.0}, ["within_noise"]),
        ({"speedup_x": 1.1, "speedup_x_lo": 1.0, "speedup_x_hi": 1.2, "macs_reduction_x": 1.0}, ["within_noise"]),
        ({"speedup_x": 1.1, "speedup_x_lo": 1.031, "speedup_x_hi": 1.2}, []),
        ({"speedup_x": 1.1, "speedup_x_lo": 1.03, "speedup_x_hi": 1.2, "macs_reduction_x": 1.0}, ["within_noise"]),
        # measurable but within 3% (a shared machine moves one pair's speedup that much): no change
        ({"speedup_x": 0.999, "speedup_x_lo": 0.998, "speedup_x_hi": 0.9995, "macs_reduction_x": 1.0},
         ["within_noise"]),
        ({"speedup_x": 1.02, "speedup_x_lo": 1.015, "speedup_x_hi": 1.025, "macs_reduction_x": 1.0}, ["within_noise"]),
        ({"speedup_x": 0.9, "speedup_x_lo": 0.85, "speedup_x_hi": 0.96}, ["slower", "no_real_speedup"]),
        ({"speedup_x": 0.9, "speedup_x_lo": 0.85, "speedup_x_hi": 0.96, "macs_reduction_x": 1.0}, ["slower"]),
        ({"speedup_x": 0.9, "speedup_x_lo": 0.85, "speedup_x_hi": 0.975, "macs_reduction_x": 1.0}, ["within_noise"]),
        ({"speedup_x": 1.0, "speedup_x_lo": 0.9, "speedup_x_hi": 1.1, "macs_reduction_x": 1.5},
         ["within_noise", "no_real_speedup"]),
        ({"speedup_x": 1.0, "speedup_x_lo": 0.9, "speedup_x_hi": 1.1, "macs_reduction_x": 1.49}, ["within_noise"]),
        ({"nonzero_reduction_x": 2.0, "compression_x": 1.04}, ["no_size_reduction"]),
        ({"nonzero_reduction_x": 10.0, "compression_x": 1.0}, ["no_size_reduction"]),
        ({"nonzero_reduction_x": 1.99, "compression_x": 1.0}, []),
        ({"nonzero_reduction_x": 10.0, "compression_x": 1.06}, []),
        ({"acc_delta": -0.1001}, ["accuracy_collapse"]),
        ({"acc_delta": -0.10}, []),
        ({"acc_delta": 0.02}, []),
    ],
)  # fmt: skip
def test_each_flag_fires_at_its_threshold(change, flags):
    assert row_flags(CLEAN | change) == flags


def test_without_an_interval_the_point_speedup_decides():
    point_only = {k: v for k, v in CLEAN.items() if not k.startswith("speedup_x_")} | {"macs_reduction_x": 1.0}
    assert row_flags(point_only | {"speedup_x": 0.8}) == ["slower"]
    assert row_flags(point_only | {"speedup_x": 1.0}) == ["within_noise"]
    assert row_flags(CLEAN | {"speedup_x_lo": math.nan, "speedup_x_hi": None, "speedup_x": 1.3}) == []


def test_missing_measurements_raise_no_flag():
    assert row_flags({"technique": "cp", "status": "ok"}) == []
    assert row_flags({"technique": "cp", "status": "ok", "speedup_x": math.nan, "macs_reduction_x": 4.0}) == []


def test_failed_rows_and_the_base_model_are_never_flagged():
    awful = CLEAN | {"speedup_x": 0.5, "speedup_x_lo": 0.4, "speedup_x_hi": 0.6, "acc_delta": -0.5}
    assert row_flags(awful) == ["slower", "no_real_speedup", "accuracy_collapse"]
    assert row_flags(awful | {"status": "failed"}) == []
    assert row_flags(awful | {"technique": "none"}) == []


def test_flags_column_of_the_fixture_sweep():
    table = quickstart_table()
    flags = flags_column(table)
    assert list(flags) == EXPECTED_FLAGS and list(flags.index) == list(table.index)


def test_every_flag_has_a_one_line_explanation():
    assert list(EXPLANATIONS) == ["within_noise", "slower", "no_real_speedup", "no_size_reduction",
                                  "accuracy_collapse", "busy_host"]  # fmt: skip
    assert all(why and "\n" not in why for why in EXPLANATIONS.values())
