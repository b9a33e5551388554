"""sweep=search: what a trial returns to Optuna and the answer printed at the end, on fixture rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from omegaconf import OmegaConf

from compress.errors import UserError
from compress.search import answer, directions, trial_values


def search(*objectives: str, max_latency_ms=None, max_size_kb=None, max_memory_mb=None):
    return OmegaConf.create({"objectives": list(objectives), "max_latency_ms": max_latency_ms,
                             "max_size_kb": max_size_kb, "max_memory_mb": max_memory_mb})  # fmt: skip


COLUMNS = ("technique", "ratio", "status", "acc_top1", "latency_ms_p50", "size_bytes")
ROWS = [
    dict(zip(COLUMNS, values, strict=True))
    for values in [
        ("none", math.nan, "ok", 0.98, 3.0, 400_000),
        ("prune_channel", 0.5, "ok", 0.97, 1.5, 120_000),
        ("quant_static", math.nan, "ok", 0.96, 1.8, 100_000),
        ("prune_slim", 0.5, "failed", math.nan, math.nan, math.nan),
    ]
]


def test_directions_follow_the_columns_and_an_unknown_column_is_one_line():
    assert directions(["acc_top1", "latency_ms_p50", "size_gzip_bytes"]) == ["maximize", "minimize", "minimize"]
    with pytest.raises(UserError, match="search.objectives: \\['accuracy'\\]; choose from acc_top1"):
        directions(["accuracy"])


def test_a_trial_returns_its_objectives_a_float_for_one_and_none_when_it_failed():
    assert trial_values(search("acc_top1", "latency_ms_p50"), ROWS[1]) == [0.97, 1.5]
    assert trial_values(search("acc_top1"), ROWS[1]) == 0.97  # Optuna's one-objective branch casts with float()
    assert trial_values(search("acc_top1", "latency_ms_p50"), ROWS[3]) is None  # Optuna marks the trial failed


def test_a_row_over_the_budget_is_dominated_by_every_row_within_it():
    budget = search("acc_top1", "latency_ms_p50", max_latency_ms=2.0)
    over = trial_values(budget, ROWS[0])  # 3 ms: 50% over
    assert over == [-0.5, math.inf]
    assert all(trial_values(budget, row)[0] > over[0] for row in ROWS[1:3])


def test_the_answer_is_the_pareto_set_or_the_most_accurate_row_within_the_budget():
    table = pd.DataFrame(ROWS)
    front = answer(search("acc_top1", "latency_ms_p50"), table)
    assert front.startswith("Pareto set of acc_top1, latency_ms_p50 (2 of 3 ok rows)")
    assert "none" in front and "prune_channel" in front and "quant_static" not in front  # slower and less accurate
    best = answer(search("acc_top1", "latency_ms_p50", max_latency_ms=2.0), table)
    assert best.splitlines()[0] == "best accuracy within the budget:" and "prune_channel" in best.splitlines()[2]
    assert answer(search("acc_top1", max_size_kb=50), table).startswith("no variant within the budget")


def test_peak_memory_is_an_objective_and_a_budget_that_a_row_without_it_cannot_meet():
    assert directions(["acc_top1", "mem_peak_mb"]) == ["maximize", "minimize"]
    table = pd.DataFrame([r | {"mem_peak_mb": mb} for r, mb in zip(ROWS, [9.0, 4.0, 2.5, math.nan], strict=True)])
    rows = table.to_dict("records")
    assert trial_values(search("acc_top1", "mem_peak_mb"), rows[2]) == [0.96, 2.5]
    budget = search("acc_top1", max_memory_mb=3.0)
    assert trial_values(budget, rows[1]) == pytest.approx(-1 / 3)  # 4 MB: a third over
    best = answer(budget, table).splitlines()
    assert best[0] == "best accuracy within the budget:" and "quant_static" in best[2]  # prune_channel is over
    unmeasured = table.drop(columns="mem_peak_mb").to_dict("records")[1]  # a device that measured no memory
    assert trial_values(budget, unmeasured) == -math.inf



def test_an_objective_the_device_did_not_measure_is_the_worst_not_a_crash():
    row = ROWS[1] | {"mem_peak_mb": None}  # device.memory=false, or a phone whose /proc hides VmHWM
    assert trial_values(search("acc_top1", "mem_peak_mb"), row) == [0.97, math.inf]
    assert trial_values(search("mem_weights_kb", "acc_top1"), ROWS[1]) == [math.inf, 0.97]  # a .ptl row: no column
    assert trial_values(search("acc_top1"), {"status": "ok"}) == -math.inf
