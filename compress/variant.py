"""One variant's artifact, computed in its stage's child process: the technique's steps → fine-tune → finalize →
export in the configured format → accuracy measured on the exported file → file sizes, into a cache folder."""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from torch import nn

from compress import cache, metrics
from compress.config import build, data_key
from compress.data import Data
from compress.formats.base import Format
from compress.isolate import report_part
from compress.techniques.base import Context, Step, quantized_engine
from compress.techniques.quant import route
from compress.train import Distill, Recipe, evaluate, fit


@dataclass
class Plan:
    """What one variant is: its technique, built steps, the ratio they get (None: no step uses it), the export
    format and the quantized engine its int8 weights are packed for (None: engine-free)."""

    technique: DictConfig
    steps: list[Step]
    ratio: float | None
    format: Format
    engine: str | None

    @classmethod
    def of(cls, cfg: DictConfig, technique: DictConfig, fmt: Format) -> Plan:
        steps: list[Step] = [build(s) for s in technique.steps.values()]
        ratio = float(cfg.ratio) if any(s.takes_sweep_ratio for s in steps) else None
        quantizes = any(s.uses_qengine for s in steps)
        if quantizes:
            route(fmt)  # imported here, in the job process: the stage children find it imported
        return cls(technique, steps, ratio, fmt, cfg.device.qengine if quantizes and fmt.uses_qengine else None)


def context(cfg: DictConfig, data: Data, base: nn.Module, fmt: Format) -> Context:
    """The runtime objects the steps get: data, example input, the base model, the fine-tune recipe."""
    recipe = {k: cfg.finetune[k] for k in ("lr", "schedule")}
    distill = Distill(base, cfg.finetune.temperature, cfg.finetune.alpha) if cfg.finetune.distill else None

    def finetune(model: nn.Module, epochs: int, lr: float | None = None, label: str | None = None,
                 **hooks: Callable) -> nn.Module:  # fmt: skip
        """`epochs` of the fine-tune recipe (at `lr` instead of finetune.lr when given), with a step's hooks."""
        changes = recipe | {"epochs": epochs} | ({"lr": lr} if lr is not None else {})
        label = label or ("distill" if distill else "fine-tune")
        return fit(model, data.train, Recipe.of(cfg.train, **changes), cfg.seed, distill, label, **hooks)

    example = data.test[0][0].unsqueeze(0)
    return Context(
        data, example, base, finetune, cfg.device.qengine, cfg.seed, cfg.train.batch_size,
        cfg.finetune.between_epochs, format=fmt, cache_dir=cfg.cache_dir, data_key=data_key(cfg, data),
        wait_s=cfg.limits.wait_s,
    )  # fmt: skip


def compressed(cfg: DictConfig, technique: DictConfig, steps: list[Step], ratio: float | None, ctx: Context):
    """Apply every step, fine-tune, finalize: (model, measurements). Structure metrics are taken before finalize
    (quantization keeps the float structure and hides its parameters in packed form)."""
    start = time.perf_counter()
    model = copy.deepcopy(ctx.base)
    for i, step in enumerate(steps):
        report_part(technique.name)
        model = step.apply(model, ratio if step.takes_sweep_ratio else step.ratio, ctx)
        if technique.finetune_between and i < len(steps) - 1:
            report_part(f"{technique.name}: fine-tune between steps")
            model = ctx.finetune(model, ctx.between_epochs)
    compress_s = time.perf_counter() - start
    # on a copy: evaluating a QAT-prepared model would move its range observers toward the test set
    before = evaluate(copy.deepcopy(model), ctx.data.test)["acc_top1"] if steps else None
    out: dict[str, Any] = {"acc_before_finetune": before}
    start = time.perf_counter()
    if steps:
        report_part(f"{technique.name}: fine-tune")
        model = ctx.finetune(model, cfg.finetune.epochs)
    out["finetune_s"] = time.perf_counter() - start
    out |= metrics.count_params(model) | {"macs": metrics.count_macs(model, ctx.example)}
    start = time.perf_counter()
    report_part(f"{technique.name}: finalize")
    for step in steps:
        model = step.finalize(model, ctx)
    out["compress_s"] = compress_s + time.perf_counter() - start
    return model.eval(), out


def write_artifact(cfg: DictConfig, data: Data, base: nn.Module, plan: Plan, folder: Path) -> None:
    """Compress, export and measure one variant into `folder` (the file, then `metrics.json`, written last)."""
    technique, steps, ratio, fmt, engine = plan.technique, plan.steps, plan.ratio, plan.format, plan.engine
    ctx = context(cfg, data, base, fmt)
    path = folder / fmt.file_name
    # int8 weights are packed for, and the exported file is measured under, the device's engine
    with quantized_engine(engine) if engine else contextlib.nullcontext():
        model, out = compressed(cfg, technique, steps, ratio, ctx)
        report_part(f"{technique.name}: export .{fmt.name}")
        out |= fmt.export(model, ctx.example, path)
        report_part(f"{technique.name}: evaluate the .{fmt.name}")
        out |= evaluate(fmt.load(path), data.test) | metrics.file_sizes(path)
    note = out.pop("export_note", None)
    out["notes"] = "; ".join(ctx.notes + ([note] if note else []))
    cache.write_json(folder / "metrics.json", out)

