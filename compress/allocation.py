"""Per-layer pruning ratios from sensitivity curves (`scope: sensitivity`): the curves convexified and cut into
pieces, the cheapest pieces (accuracy lost per unit removed) taken first until the step's ratio is removed. Pure:
tables in, ratios out."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

from compress.errors import UserError


def _lower_hull(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The lower convex hull of points sorted by x (monotone chain)."""
    hull: list[tuple[float, float]] = []
    for p in points:
        while len(hull) >= 2 and (
            (hull[-1][0] - hull[-2][0]) * (p[1] - hull[-2][1]) - (hull[-1][1] - hull[-2][1]) * (p[0] - hull[-2][0])
        ) <= 0:
            hull.pop()
        hull.append(p)
    return hull


def _pieces(rows: pd.DataFrame, max_ratio: float) -> list[tuple[float, float, float]]:
    """(accuracy drop per removed unit, start ratio, width) of one layer's curve: the drop made monotone in the
    ratio, cut at `max_ratio`, convexified (its lower hull) and split at the measured ratios."""
    rows = rows.sort_values("ratio")
    ratio, acc = rows["ratio"].to_numpy(), rows["acc_top1"].to_numpy()
    drop = np.maximum.accumulate(acc[0] - acc)
    cut = min(max_ratio, ratio[-1])
    grid = np.array(sorted({*ratio[ratio < cut], cut}))
    hull = _lower_hull(list(zip(grid, np.interp(grid, ratio, drop), strict=True)))
    size = float(rows["size"].iloc[0])
    pieces = []
    for (r0, d0), (r1, d1) in itertools.pairwise(hull):
        cuts = [r0, *grid[(grid > r0) & (grid < r1)], r1]
        pieces += [((d1 - d0) / ((r1 - r0) * size), a, b - a) for a, b in itertools.pairwise(cuts)]
    return pieces


def allocate(table: pd.DataFrame, ratio: float, max_ratio: float = 0.9) -> dict[str, float]:
    """Per-layer ratios that remove `ratio` of all the layers' units (channels or weights: `size`) losing least
    accuracy: the summed drop of the convexified curves is minimal when the cheapest pieces (drop per unit removed)
    are taken first, the last one in part (ties: lower ratios first, so free pruning is spread over the layers).
    A ratio beyond what `max_ratio` in every layer removes is a one-line error."""
    ratios: dict[str, float] = {}
    sizes: dict[str, int] = {}
    pieces = []
    for layer, rows in table.groupby("layer", sort=False):
        ratios[layer], sizes[layer] = 0.0, int(rows["size"].iloc[0])
        pieces += [(cost, start, layer, width) for cost, start, width in _pieces(rows, max_ratio)]
    left = ratio * sum(sizes.values())
    reachable = sum(width * sizes[layer] for _, _, layer, width in pieces) / sum(sizes.values())
    if ratio > reachable + 1e-9:
        raise UserError(
            f"scope sensitivity reaches at most ratio {reachable:.2f} (each layer at most {max_ratio:g}, the curves "
            "end at 0.9); use a lower ratio or another scope"
        )
    for _, _, layer, width in sorted(pieces, key=lambda p: p[:2]):
        if left <= 0:
            break
        take = min(width, left / sizes[layer])
        ratios[layer] += take
        left -= take * sizes[layer]
    return {layer: round(float(r), 4) for layer, r in ratios.items()}


def allocation_note(ratios: dict[str, float]) -> str:
    return "sensitivity ratios: " + ", ".join(f"{layer} {r:.2f}" for layer, r in ratios.items())
