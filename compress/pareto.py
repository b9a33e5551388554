"""The Pareto set of a table: the rows no other row beats on every chosen objective."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

Direction = Literal["max", "min"]


def pareto_front(table: pd.DataFrame, objectives: dict[str, Direction]) -> pd.DataFrame:
    """The rows of `table` that no other row dominates over `objectives` ({column: "max" | "min"}), in
    table order. A row dominates another when it is at least as good on every objective and strictly
    better on one, so equal rows are all kept. Rows with a missing (NaN) objective are left out."""
    if not objectives:
        raise ValueError("pareto_front needs at least one objective")
    wrong = {col: d for col, d in objectives.items() if d not in ("max", "min")}
    if wrong:
        raise ValueError(f"objective directions must be 'max' or 'min', got {wrong}")
    missing = [col for col in objectives if col not in table.columns]
    if missing:
        raise KeyError(f"no column {missing[0]!r} in the table")
    values = table[list(objectives)].apply(pd.to_numeric, errors="coerce")
    complete = values.notna().all(axis=1).to_numpy()
    # every objective turned into "larger is better"
    signs = np.array([1.0 if d == "max" else -1.0 for d in objectives.values()])
    score = values.to_numpy(dtype=float)[complete] * signs
    at_least = (score[:, None, :] >= score[None, :, :]).all(axis=2)  # [i, j]: i is at least as good as j
    better = (score[:, None, :] > score[None, :, :]).any(axis=2)  # [i, j]: i beats j on some objective
    dominated = (at_least & better).any(axis=0)
    return table[complete][~dominated]
