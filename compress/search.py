"""Multi-objective search (`sweep=search`, hydra-optuna-sweeper): the directions of the objective columns, what one
trial returns to Optuna, and the answer printed at the end of the study (the Pareto set, or the most accurate
variant within the budget)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd
from omegaconf import DictConfig, OmegaConf

from compress.errors import UserError
from compress.pareto import pareto_front

# Columns a search can optimise, with the direction that is better.
SENSE = {
    "acc_top1": "maximize", "acc_top5": "maximize", "speedup_x": "maximize", "compression_x": "maximize",
    "latency_ms_p50": "minimize", "latency_ms_p90": "minimize", "size_bytes": "minimize",
    "size_gzip_bytes": "minimize", "macs": "minimize", "params": "minimize", "nonzero_params": "minimize",
    "mem_peak_mb": "minimize", "mem_planned_kb": "minimize", "mem_weights_kb": "minimize",
}  # fmt: skip


# search.<budget>: the column it limits and that column's unit per budget unit
BUDGETS = {"max_latency_ms": ("latency_ms_p50", 1.0), "max_size_kb": ("size_bytes", 1024.0),
           "max_memory_mb": ("mem_peak_mb", 1.0)}  # fmt: skip


def register_resolver() -> None:
    """The `search_directions` resolver that sweep=search's config reads (Optuna's direction per objective); the
    CLI registers it before Hydra composes the config."""
    if not OmegaConf.has_resolver("search_directions"):
        OmegaConf.register_new_resolver("search_directions", directions)


def directions(objectives: Sequence[str]) -> list[str]:
    """Optuna's direction of each objective column (the `hydra.sweeper.direction` of `sweep=search`)."""
    unknown = [o for o in objectives if o not in SENSE]
    if unknown or not objectives:
        raise UserError(f"search.objectives: {unknown or 'none given'}; choose from {', '.join(SENSE)}")
    return [SENSE[o] for o in objectives]


def _measured(row: dict, column: str) -> float:
    """The row's number in `column`; infinity where its device did not measure it (missing, None or NaN)."""
    value = row.get(column)
    return math.inf if pd.isna(value) else float(value)


def overshoot(search: DictConfig, row: dict) -> float:
    """How far a row is over the budget (latency, file size and/or peak memory): 0 within it, else the worst excess
    ratio. A row whose device did not measure a budgeted column is over that budget (it cannot show it is within)."""
    limits = {b: search.get(b) for b in BUDGETS}
    ratios = [_measured(row, col) / (limits[b] * unit) for b, (col, unit) in BUDGETS.items() if limits[b] is not None]
    return max([0.0, *(r - 1 for r in ratios)])


def trial_values(search: DictConfig, row: dict) -> float | list[float] | None:
    """What the trial returns: the objective columns of an ok row (a float for one objective, as Optuna's
    sweeper expects); None for a failed one (Optuna marks the trial failed and the study goes on). A row over the
    budget is dominated by every row within it: its objectives become the worst possible, its accuracy minus the
    excess. An objective its device did not measure (peak memory off or hidden, planned memory of a .ptl) is the
    worst possible."""
    if row.get("status") != "ok":
        return None
    excess = overshoot(search, row)
    values = [_objective(row, o, excess) for o in search.objectives]
    return values[0] if len(values) == 1 else values


def _objective(row: dict, column: str, excess: float) -> float:
    worst = -math.inf if SENSE[column] == "maximize" else math.inf
    if excess:
        return -excess if column.startswith("acc") else worst
    value = _measured(row, column)
    return worst if math.isinf(value) else value


def answer(search: DictConfig, table: pd.DataFrame) -> str:
    """The study's answer: the most accurate ok row within the budget, or the Pareto set of the objectives."""
    ok = table[table["status"] == "ok"]
    budgeted = [col for b, (col, _) in BUDGETS.items() if search.get(b) is not None]
    wanted = ["technique", "ratio", *search.objectives, "acc_top1", "latency_ms_p50", "size_bytes", *budgeted]
    shown = [c for c in dict.fromkeys(wanted) if c in table]
    if budgeted:
        within = ok[[overshoot(search, r) == 0 for r in ok.to_dict("records")]]
        if within.empty:
            return "no variant within the budget (search.max_latency_ms / search.max_size_kb / search.max_memory_mb)"
        best = within.sort_values("acc_top1", ascending=False).head(1)
        return "best accuracy within the budget:\n" + best[shown].to_string(index=False)
    sense = {o: "max" if SENSE[o] == "maximize" else "min" for o in search.objectives}
    front = pareto_front(ok, sense) if len(ok) else ok
    return f"Pareto set of {', '.join(search.objectives)} ({len(front)} of {len(ok)} ok rows):\n" + (
        front[shown].to_string(index=False) if len(front) else "(empty)"
    )
