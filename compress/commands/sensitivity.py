"""`python cli.py sensitivity [overrides]`: the sensitivity curves of the base model's layers under a pruning
step, written as `sensitivity.csv` and `sensitivity.png` and printed as a table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig

from compress import accel, cache, machine, variant
from compress.config import build
from compress.errors import UserError, first_line
from compress.formats.ptl import Ptl
from compress.isolate import torch_threads
from compress.pipeline import base_model
from compress.plots import sensitivity_figure
from compress.techniques.sensitivity import Analyzable, curves

CONF = Path(__file__).resolve().parents[2] / "conf"
OUTPUT = Path("outputs") / "sensitivity"


def write_report(table: pd.DataFrame, folder: Path, title: str) -> tuple[Path, Path]:
    """`sensitivity.csv` (with `acc_drop` against the unpruned model) and `sensitivity.png` (accuracy against
    ratio, one line per layer) in `folder`."""
    base = table.loc[table["ratio"] == 0, "acc_top1"].max()
    csv, png = folder / "sensitivity.csv", folder / "sensitivity.png"
    cache.atomic_write(csv, lambda tmp: table.assign(acc_drop=base - table["acc_top1"]).to_csv(tmp, index=False))
    fig = sensitivity_figure(table, title)
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
    for node in technique.steps.values():
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
    data = build(cfg.dataset)
    with torch_threads(1):  # the base model trains in a forked child (compress/isolate.py)
        base, _ = base_model(cfg, data)
    ctx = variant.context(cfg, data, base, Ptl())  # one increment per layer: nothing is fine-tuned
    with machine.computing(cfg.threads, accel.gpu_ids(cfg), cfg.train.jobs_per_gpu), torch_threads(cfg.threads):
        accel.use(cfg)  # this process's forks are done: the curves may start CUDA here
        table = curves(step, base, ctx)
    name = f"{cfg.model.name}-{cfg.dataset.name}-{cfg.technique.name}"
    csv, png = write_report(table, OUTPUT / name, f"sensitivity: {name.replace('-', ' / ')}")
    wide = table.pivot(index="layer", columns="ratio", values="acc_top1").loc[table["layer"].unique()]
    print(wide.to_string(float_format="{:.3f}".format))
    print(f"wrote {csv} and {png}")
    return 0
