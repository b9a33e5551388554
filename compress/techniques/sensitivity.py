"""Per-layer sensitivity of a pruning step (as Distiller and NNI offer it): every prunable layer pruned alone at
ratios 0.1 … 0.9 without fine-tuning and the test accuracy measured; the curves, cached under the stage cache
(`compress/allocation.py` turns them into per-layer ratios, `compress/commands/sensitivity.py` is the command)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from pathlib import Path
from typing import Protocol

import pandas as pd
from torch import nn

from compress import cache
from compress.data.base import digest
from compress.techniques.base import Context
from compress.train import evaluate

log = logging.getLogger(__name__)

RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 10))


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
    with cache.entry_lock(path, ctx.wait_s):  # variants of one sweep need the same curves: one job measures them
        found = cache.read_json(path)
        if found is not None:
            log.info("sensitivity curves: cache hit %s", path)
            return pd.DataFrame(found)
        table = measure(step, model, ctx)
        cache.write_json(path, table.to_dict(orient="records"))
    return table
