"""pareto_front on hand-checked tables: dominance, ties, directions, missing values, bad objectives."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from sweep_table import quickstart_table

from compress.pareto import pareto_front

# A: best accuracy; B: faster, a bit less accurate; C: dominated by B (slower and less accurate);
# D: dominated by A (as accurate, slower); E: fastest; F: a copy of A (ties are kept); G: no latency.
POINTS = pd.DataFrame(
    {"name": list("ABCDEFG"), "acc": [0.97, 0.96, 0.95, 0.97, 0.90, 0.97, 0.99],
     "ms": [1.0, 0.5, 0.6, 1.2, 0.2, 1.0, math.nan]},
    index=[10, 11, 12, 13, 14, 15, 16],
)  # fmt: skip


def test_front_of_two_objectives_keeps_ties_and_table_order():
    front = pareto_front(POINTS, {"acc": "max", "ms": "min"})
    assert list(front["name"]) == ["A", "B", "E", "F"]
    assert list(front.index) == [10, 11, 14, 15]  # the caller's rows, not copies renumbered


def test_directions_are_respected():
    assert list(pareto_front(POINTS, {"acc": "min", "ms": "max"})["name"]) == ["C", "D", "E"]
    assert list(pareto_front(POINTS.drop(16), {"acc": "max"})["name"]) == ["A", "D", "F"]  # one objective: ties
    assert list(pareto_front(POINTS, {"acc": "max"})["name"]) == ["G"]  # only the objectives' NaNs exclude a row


def test_front_of_three_objectives_on_the_fixture_sweep():
    host = quickstart_table().query("device == 'host:x86_64' and status == 'ok'")
    front = pareto_front(host, {"acc_top1": "max", "latency_ms_p50": "min", "size_gzip_bytes": "min"})
    # cp 0.5 is beaten by prune_magnitude 0.9 (more accurate, faster, smaller); quant_dynamic too
    assert [(r.technique, r.ratio) for r in front.itertuples()] == [
        ("none", pytest.approx(math.nan, nan_ok=True)), ("prune_magnitude", 0.5), ("prune_magnitude", 0.9),
        ("prune_channel", 0.5), ("prune_channel", 0.7), ("prune_channel", 0.9),
    ]  # fmt: skip


def test_numbers_stored_as_text_are_compared_as_numbers():
    table = POINTS.astype({"ms": str})
    assert list(pareto_front(table, {"acc": "max", "ms": "min"})["name"]) == ["A", "B", "E", "F"]


def test_empty_table_gives_an_empty_front():
    assert pareto_front(POINTS.iloc[:0], {"acc": "max", "ms": "min"}).empty


@pytest.mark.parametrize(
    ("objectives", "error", "message"),
    [({"acc": "up"}, ValueError, "'max' or 'min'"), ({"speed": "max"}, KeyError, "speed"), ({}, ValueError, "one")],
)
def test_bad_objectives_are_refused(objectives, error, message):
    with pytest.raises(error, match=message):
        pareto_front(POINTS, objectives)
