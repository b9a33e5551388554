"""One variant: base model (cached) → steps → fine-tune → finalize → export → measure → benchmark.

Every stage result is cached under `cache_dir` by a hash of the config that produced it, so a sweep
trains its base model once, a re-run does almost nothing and a crashed sweep resumes. The benchmark
device is passed in (an `adb_bench` object with `identity()` and `benchmark(path, input_shape)`):
this package never imports `adb_bench`.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from compress import cache, metrics
from compress.config import build, check_ratio, plain
from compress.data import Data
from compress.export import export_ptl, load_ptl
from compress.models.checkpoint import check_input_size, file_digest, load_checkpoint
from compress.techniques.base import Context, Step, quantized_engine
from compress.train import Distill, Recipe, evaluate, fit

log = logging.getLogger(__name__)


class Device(Protocol):
    def identity(self) -> dict: ...
    def benchmark(self, model_path: str, input_shape: list[int]) -> dict: ...


def base_model(cfg: DictConfig, data: Data) -> tuple[nn.Module, dict]:
    """The trained base model of (model, dataset, train, seed), from the cache when it is there;
    with `model.checkpoint=PATH` the user's weights instead, not trained."""
    check_input_size(cfg.model.name, cfg.model.get("min_size"), data.input_shape)
    if cfg.model.get("checkpoint"):
        torch.manual_seed(cfg.seed)
        model = build(cfg.model)
        load_checkpoint(model, cfg.model.checkpoint, cfg.model.name)
        log.info("base model: %s loaded; training skipped", cfg.model.checkpoint)
        return model.eval(), {"train_s": 0.0, "base_cached": False}
    key = cache.key_of("base", plain(cfg.model), plain(cfg.dataset), plain(cfg.train), cfg.seed)
    path = Path(cfg.cache_dir) / "base" / f"{key}.pt"
    torch.manual_seed(cfg.seed)
    model = build(cfg.model)
    entry = cache.load_state(path)
    if entry is not None:
        try:
            model.load_state_dict(entry["state_dict"])
            log.info("base model: cache hit %s", path)
            return model.eval(), {"train_s": entry["train_s"], "base_cached": True}
        except (KeyError, RuntimeError) as exc:
            log.warning("cache entry %s does not fit the model (%s); retraining", path, exc)
            torch.manual_seed(cfg.seed)
            model = build(cfg.model)
    log.info("base model: cache miss, training %s", path)
    start = time.perf_counter()
    fit(model, data.train, Recipe(**cfg.train), cfg.seed)
    train_s = time.perf_counter() - start
    cache.save_state(path, {"state_dict": model.state_dict(), "train_s": train_s})
    return model, {"train_s": train_s, "base_cached": False}


def _context(cfg: DictConfig, data: Data, base: nn.Module) -> Context:
    recipe = dict(cfg.train) | {k: cfg.finetune[k] for k in ("lr", "schedule")}
    distill = Distill(base, cfg.finetune.temperature, cfg.finetune.alpha) if cfg.finetune.distill else None

    def finetune(model: nn.Module, epochs: int) -> nn.Module:
        return fit(model, data.train, Recipe(**(recipe | {"epochs": epochs})), cfg.seed, distill)

    example = data.test[0][0].unsqueeze(0)
    return Context(
        data, example, base, finetune, cfg.device.qengine, cfg.seed, cfg.train.batch_size, cfg.finetune.between_epochs
    )


def _compress(cfg: DictConfig, steps: list[Step], ratio: float | None, ctx: Context) -> tuple[nn.Module, dict]:
    """Apply every step, fine-tune, finalize; structure metrics are taken before finalize
    (quantization keeps the float structure and hides its parameters in packed form)."""
    start = time.perf_counter()
    model = copy.deepcopy(ctx.teacher)
    for i, step in enumerate(steps):
        model = step.apply(model, ratio if step.takes_sweep_ratio else step.ratio, ctx)
        if cfg.technique.finetune_between and i < len(steps) - 1:
            model = ctx.finetune(model, ctx.between_epochs)
    compress_s = time.perf_counter() - start
    # on a copy: evaluating a QAT-prepared model would move its range observers toward the test set
    before = evaluate(copy.deepcopy(model), ctx.data.test)["acc_top1"] if steps else None
    out: dict[str, Any] = {"acc_before_finetune": before}
    start = time.perf_counter()
    model = ctx.finetune(model, cfg.finetune.epochs) if steps else model
    out["finetune_s"] = time.perf_counter() - start
    out |= metrics.count_params(model) | {"macs": metrics.count_macs(model, ctx.example)}
    start = time.perf_counter()
    for step in steps:
        model = step.finalize(model, ctx)
    out["compress_s"] = compress_s + time.perf_counter() - start
    return model.eval(), out


def _artifact_key(cfg: DictConfig, technique: DictConfig, ratio: float | None, engine: str | None) -> str:
    """Everything that determines the exported file (a base with no steps ignores technique and fine-tune)."""
    steps = bool(technique.steps)
    parts = [plain(cfg.model), plain(cfg.dataset), plain(cfg.train), cfg.seed, plain(technique) if steps else None]
    parts += [ratio, plain(cfg.finetune) if steps else None, plain(cfg.export), engine]
    if cfg.model.get("checkpoint"):
        parts.append(file_digest(cfg.model.checkpoint))  # the weights' content, not just their path
    return cache.key_of("artifact", *parts)


def artifact(cfg: DictConfig, data: Data, base: nn.Module, technique: DictConfig) -> tuple[Path, dict]:
    """Compress and export one variant (cached): the .ptl path and its measurements."""
    steps: list[Step] = [build(s) for s in technique.steps]
    uses_ratio = any(s.takes_sweep_ratio for s in steps)
    ratio = float(cfg.ratio) if uses_ratio else None
    engine = cfg.device.qengine if any(getattr(s, "uses_qengine", False) for s in steps) else None
    folder = Path(cfg.cache_dir) / "variants" / _artifact_key(cfg, technique, ratio, engine)
    found = cache.read_json(folder / "metrics.json")
    if found is not None and (folder / "model.ptl").exists():
        log.info("variant %s: cache hit %s", technique.name, folder)
        return folder / "model.ptl", found | {"cached": True}
    ctx = _context(cfg, data, base)
    # int8 weights are packed for, and the exported file is measured under, the device's engine
    with quantized_engine(engine) if engine else contextlib.nullcontext():
        model, out = _compress(cfg, steps, ratio, ctx)
        out |= export_ptl(model, ctx.example, folder / "model.ptl", cfg.export.optimize, cfg.export.bytecode_version)
        out |= evaluate(load_ptl(folder / "model.ptl"), data.test) | metrics.file_sizes(folder / "model.ptl")
    out |= {"ratio": ratio if uses_ratio else math.nan, "ratio_applies": uses_ratio}
    out["notes"] = "; ".join(ctx.notes + ([out["export_note"]] if out["export_note"] else []))
    cache.write_json(folder / "metrics.json", out)
    return folder / "model.ptl", out | {"cached": False}


def benchmark(device: Device, path: Path, input_shape: list[int]) -> dict:
    """Latency of one exported file on `device` (cached per file and device identity)."""
    record = path.parent / f"bench-{cache.key_of(device.identity())}.json"
    found = cache.read_json(record)
    if found is not None:
        return found
    start = time.perf_counter()
    result = device.benchmark(str(path), input_shape)
    result["bench_s"] = time.perf_counter() - start
    cache.write_json(record, result)
    return result


# The reference every row is compared with: the base model itself, exported and benchmarked.
REFERENCE = OmegaConf.create({"name": "none", "steps": [], "finetune_between": False})


def run_variant(cfg: DictConfig, device: Device, row: dict) -> None:
    """Fill `row` with one variant's measurements; on an exception `row` keeps what was measured."""
    check_ratio(cfg.ratio)
    data = build(cfg.dataset)
    base, info = base_model(cfg, data)
    row |= info
    ref_path, ref = artifact(cfg, data, base, REFERENCE)
    path, out = artifact(cfg, data, base, cfg.technique)
    row |= {k: v for k, v in out.items() if k != "export_note"} | {"artifact": str(path)}
    shape = [1, *data.input_shape]
    ref_bench = benchmark(device, ref_path, shape)
    row |= benchmark(device, path, shape)
    row["compression_x"] = ref["size_bytes"] / row["size_bytes"]
    row["acc_delta"] = row["acc_top1"] - ref["acc_top1"]
    row["speedup_x"] = ref_bench["latency_ms_p50"] / row["latency_ms_p50"]
    row["status"] = "ok"
