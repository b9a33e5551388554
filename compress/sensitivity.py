"""Per-layer sensitivity of a pruning step (as Distiller and NNI offer it): every prunable layer pruned alone at
ratios 0.1 … 0.9 without fine-tuning and the test accuracy measured; the curves (cached), `sensitivity.csv` and
its plot; the per-layer ratios allocated from the curves (`technique.scope=sensitivity`); and the
`python cli.py sensitivity` command."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from matplotlib.figure import Figure  # no pyplot: drawn by the Agg canvas, no GUI, no global state
from omegaconf import DictConfig
from torch import nn

from compress import accel, cache, machine, variant
from compress.config import build
from compress.data.base import digest
from compress.errors import UserError, first_line
from compress.formats.ptl import Ptl
from compress.pipeline import base_model
from compress.techniques.base import Context
from compress.train import evaluate

log = logging.getLogger(__name__)

WAIT_S = 86400  # how long a job waits for another one measuring the same curves
RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))
CONF = Path(__file__).resolve().parents[1] / "conf"
OUTPUT = Path("outputs") / "sensitivity"


class Analyzable(Protocol):
    """A pruning step the analysis can drive (compress.techniques.prune: ChannelPrune, MagnitudePrune)."""

    def sensitivity_method(self) -> dict: ...  # what, besides the model and the data, decides its curves
    def sensitivity_layers(self, model: nn.Module, ctx: Context) -> dict[str, int]: ...  # name → units (size)
    def prune_alone(self, model: nn.Module, layer: str, ratio: float, ctx: Context) -> nn.Module: ...


def measure(step: Analyzable, model: nn.Module, ctx: Context) -> pd.DataFrame:
    """`layer, size, ratio, acc_top1` for every layer of `step` pruned alone at each of RATIOS (and 0: as is)."""
    scratch = dataclasses.replace(ctx, notes=[])  # the pruning notes of the trials are not the variant's
    base = evaluate(copy.deepcopy(model), ctx.data.test)["acc_top1"]
    rows = []
    for layer, size in step.sensitivity_layers(model, ctx).items():
        rows.append({"layer": layer, "size": size, "ratio": 0.0, "acc_top1": base})
        for ratio in RATIOS:
            accuracy = evaluate(step.prune_alone(copy.deepcopy(model), layer, ratio, scratch), ctx.data.test)
            rows.append({"layer": layer, "size": size, "ratio": ratio, "acc_top1": accuracy["acc_top1"]})
        log.info("sensitivity of %s: %s", layer, " ".join(f"{r['acc_top1']:.3f}" for r in rows[-len(RATIOS) :]))
    return pd.DataFrame(rows)


def curves(step: Analyzable, model: nn.Module, ctx: Context) -> pd.DataFrame:
    """The sensitivity curves of `model` under `step` (see `measure`), cached when the context has a cache:
    keyed by the model's weights, the data set's identity and the step's method, measured by one job at a time
    (they are measured inside the variant stage that needs them, which runs isolated)."""
    if ctx.cache_dir is None:
        return measure(step, model, ctx)
    weights = digest(*model.state_dict().values())
    key = cache.key_of("sensitivity", ctx.data_key, weights, step.sensitivity_method(), RATIOS)
    path = Path(ctx.cache_dir) / "sensitivity" / f"{key}.json"
    with cache.entry_lock(path, WAIT_S):  # variants of one sweep need the same curves: one job measures them
        found = cache.read_json(path)
        if found is not None:
            log.info("sensitivity curves: cache hit %s", path)
            return pd.DataFrame(found)
        table = measure(step, model, ctx)
        cache.write_json(path, table.to_dict(orient="records"))
    return table


# --- allocation ------------------------------------------------------------------------------------------------


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


# --- report and command ----------------------------------------------------------------------------------------


def write_report(table: pd.DataFrame, folder: Path, title: str) -> tuple[Path, Path]:
    """`sensitivity.csv` (with `acc_drop` against the unpruned model) and `sensitivity.png` (accuracy against
    ratio, one line per layer) in `folder`."""
    base = table.loc[table["ratio"] == 0, "acc_top1"].max()
    csv, png = folder / "sensitivity.csv", folder / "sensitivity.png"
    cache.atomic_write(csv, lambda tmp: table.assign(acc_drop=base - table["acc_top1"]).to_csv(tmp, index=False))
    fig = Figure(figsize=(7.5, 4.8), layout="constrained")
    ax = fig.subplots()
    for layer, rows in table.groupby("layer", sort=False):
        ax.plot(rows["ratio"], rows["acc_top1"], marker="o", ms=3, label=f"{layer} ({rows['size'].iloc[0]})")
    ax.set(xlabel="ratio pruned (this layer alone, no fine-tune)", ylabel="test accuracy (top-1)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncols=2 if table["layer"].nunique() > 12 else 1)
    cache.atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    return csv, png


def _composed(overrides: list[str]) -> DictConfig:
    """The config of `overrides` (technique=prune_channel unless one is given); a bad override is one line."""
    if not any(o.lstrip("+~").split("=")[0] == "technique" for o in overrides):
        overrides = ["technique=prune_channel", *overrides]
    try:
        with initialize_config_dir(str(CONF), version_base="1.3"):
            return compose("config", overrides)
    except HydraException as exc:
        first = first_line(exc) or type(exc).__name__
        raise UserError(f"sensitivity takes one model, dataset and technique: {first}") from None


def analyzed_step(technique: DictConfig) -> Analyzable:
    """The first step of `technique` that the analysis can drive."""
    for node in technique.steps:
        step = build(node)
        if hasattr(step, "prune_alone"):
            return step
    raise UserError(
        f"technique {technique.name} has no pruning step to analyse; use technique=prune_channel or prune_magnitude"
    )


def command(overrides: list[str]) -> int:
    """`python cli.py sensitivity [model=... dataset=... technique=prune_channel ...]`: the curves of the base
    model → `outputs/sensitivity/MODEL-DATASET-TECHNIQUE/sensitivity.{csv,png}` and the printed table."""
    cfg = _composed(overrides)
    step = analyzed_step(cfg.technique)
    accel.check(cfg)  # a device that is not there: one line now, before the base model trains
    torch.set_num_threads(1)  # the base model trains in a forked child (compress/isolate.py)
    data = build(cfg.dataset)
    base, _ = base_model(cfg, data)
    ctx = variant.context(cfg, data, base, Ptl())  # one increment per layer: nothing is fine-tuned
    with machine.computing(cfg.threads, accel.gpu_ids(cfg), cfg.train.jobs_per_gpu):
        torch.set_num_threads(cfg.threads)
        accel.use(cfg)  # this process's forks are done: the curves may start CUDA here
        table = curves(step, base, ctx)
    name = f"{cfg.model.name}-{cfg.dataset.name}-{cfg.technique.name}"
    csv, png = write_report(table, OUTPUT / name, f"sensitivity: {name.replace('-', ' / ')}")
    wide = table.pivot(index="layer", columns="ratio", values="acc_top1").loc[table["layer"].unique()]
    print(wide.to_string(float_format="{:.3f}".format))
    print(f"wrote {csv} and {png}")
    return 0
