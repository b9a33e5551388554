"""One variant: base model → reference and variant artifacts → one benchmark session → the row.

Each stage is computed once whatever runs the jobs (sequential, joblib, submitit/SLURM, Ray): its result is a cache
entry under `cache_dir`, keyed by exactly what determines it (never a path); a job that finds the entry locked by
another job waits for it and reads it. A stage runs in a forked child under `limits` (compress/isolate.py), holding
a compute slot of this machine or, for a host benchmark, the whole idle host (compress/machine.py). The benchmark
device is passed in (an `adb_bench` object): this package never imports `adb_bench`.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from compress import accel, cache, machine
from compress.config import build, check_ratio, data_key, plain
from compress.data import Data
from compress.errors import StageError, UserError, one_line
from compress.isolate import Limits, memory_limit_bytes, run_isolated, torch_threads
from compress.latency import latency_columns, speedup_columns
from compress.models.checkpoint import check_input_size, file_digest, load_checkpoint
from compress.models.source import model_identity
from compress.profile import NO_ETRECORD, read_dumps, side_by_side
from compress.train import Recipe, fit
from compress.variant import Plan, write_artifact

log = logging.getLogger(__name__)

# The reference every row is compared with: the base model itself, exported and benchmarked.
REFERENCE = OmegaConf.create({"name": "none", "steps": {}, "finetune_between": False})


class Device(Protocol):
    exclusive_host: bool  # time with the machine idle (host device) or not (a phone has its own lock)
    profiling: bool  # device.profile: profile() the files after benchmarking them

    def attach(self) -> None: ...  # find what the device needs (phones, binaries); a DeviceError if it is not there
    def identity(self) -> dict: ...  # after attach: what decides its timings (the benchmark cache key)
    def benchmark(self, model_paths: list[str], input_shape: list[int]) -> list[dict]: ...
    def profile(self, model_paths: list[str], input_shape: list[int], folder: Path) -> list[dict]: ...


@dataclass
class Done:
    """A stage's result and how this job got it: `computed`, read from the `cache`, or `waited` for another job."""

    value: Any
    source: str
    waited_s: float


def once(stage: str, entry: Path, read: Callable[[], Any], work: Callable[[], None], cfg: DictConfig,
         hold: Callable[[], contextlib.AbstractContextManager[float]]) -> Done:  # fmt: skip
    """The cache entry `entry`, computed by `work` (in an isolated child, holding `hold()`) unless it exists
    or another job computes it meanwhile. When the job this one waited for failed, this one fails the same way
    instead of computing it again; a later run (a resumed sweep) computes it anew."""
    found = read()
    if found is not None:
        return Done(found, "cache", 0.0)
    asked, failure = time.time(), Path(f"{entry}.failed")
    with cache.entry_lock(entry, cfg.limits.wait_s) as waited:
        found = read()
        if found is not None:
            return Done(found, "waited", waited)
        if failure.exists() and failure.stat().st_mtime >= asked:
            raise StageError((cache.read_json(failure) or {}).get("error", f"the {stage} stage failed in another job"))
        cache.clear_partial(entry)
        memory = memory_limit_bytes(cfg.limits.memory_gb, machine.concurrent_stages(cfg.threads))
        try:
            with hold() as held:
                run_isolated(stage, work, Limits(memory, cfg.limits[f"{stage}_s"]), f"limits.{stage}_s")
        except Exception as exc:
            cache.write_json(failure, {"error": one_line(exc)})  # for the jobs waiting for this entry
            raise
    failure.unlink(missing_ok=True)
    found = read()
    if found is None:
        raise StageError(f"the {stage} stage finished without writing {entry}")
    return Done(found, "computed", waited + held)


def _computing(cfg: DictConfig) -> Callable[[], contextlib.AbstractContextManager[float]]:
    return lambda: machine.computing(cfg.threads, accel.gpu_ids(cfg), cfg.train.jobs_per_gpu)


def _seeded_model(cfg: DictConfig) -> nn.Module:
    torch.manual_seed(cfg.seed)
    return build(cfg.model)


def base_stage(cfg: DictConfig, data: Data) -> Done:
    """The trained base model's cache entry {state_dict, train_s} for (model and its code's source, data, train,
    seed, threads)."""
    key = cache.key_of("base", model_identity(cfg.model), data_key(cfg, data), accel.train_key(cfg), cfg.seed)
    entry = Path(cfg.cache_dir) / "base" / f"{key}.pt"

    def work() -> None:
        accel.use(cfg)
        log.info("base model: training %s", entry)
        with torch_threads(cfg.threads):
            model, start = _seeded_model(cfg), time.perf_counter()
            fit(model, data.train, Recipe.of(cfg.train), cfg.seed)
        cache.save_state(entry, {"state_dict": model.state_dict(), "train_s": time.perf_counter() - start})

    return once("base", entry, lambda: cache.load_state(entry), work, cfg, _computing(cfg))


def base_model(cfg: DictConfig, data: Data) -> tuple[nn.Module, dict]:
    """The trained base model of (model, dataset, train, seed, threads) and {train_s, base_from}; with
    `model.checkpoint=PATH` the user's weights instead, not trained."""
    check_input_size(cfg.model.name, cfg.model.get("min_size"), data.input_shape)
    model = _seeded_model(cfg)
    if cfg.model.get("checkpoint"):
        load_checkpoint(model, cfg.model.checkpoint, cfg.model.name)
        log.info("base model: %s loaded; training skipped", cfg.model.checkpoint)
        return model.eval(), {"train_s": 0.0, "base_from": "checkpoint", "waited_s": 0.0}
    done = base_stage(cfg, data)
    try:
        model.load_state_dict(done.value["state_dict"])
    except (KeyError, RuntimeError) as exc:
        raise StageError(f"the cached base model does not fit {cfg.model.name} ({exc}); delete its entry") from exc
    log.info("base model: %s", done.source)
    return model.eval(), {"train_s": done.value["train_s"], "base_from": done.source, "waited_s": done.waited_s}


def _artifact_key(cfg: DictConfig, data: Data, plan: Plan) -> str:
    """Everything that determines the exported file (a base with no steps ignores technique and fine-tune)."""
    steps = bool(plan.steps)
    parts = [model_identity(cfg.model), data_key(cfg, data), accel.train_key(cfg), cfg.seed]
    parts += [plain(plan.technique) if steps else None, plan.ratio, plain(cfg.finetune) if steps else None]
    parts += [plain(cfg.export), plan.format.versions(), plan.engine]
    if cfg.model.get("checkpoint"):
        parts.append(file_digest(cfg.model.checkpoint))  # the weights' content, not just their path
    return cache.key_of("artifact", *parts)


def artifact_stage(cfg: DictConfig, data: Data, base: nn.Module, plan: Plan) -> Done:
    """One variant compressed, exported and measured: Done(value=(file path, metrics))."""
    folder = Path(cfg.cache_dir) / "variants" / _artifact_key(cfg, data, plan)
    path = folder / plan.format.file_name

    def read() -> tuple[Path, dict] | None:
        found = cache.read_json(folder / "metrics.json")
        return (path, found) if found is not None and path.exists() else None

    def work() -> None:
        accel.use(cfg)
        with torch_threads(cfg.threads):
            write_artifact(cfg, data, base, plan, folder)

    return once("variant", folder, read, work, cfg, _computing(cfg))


def bench_stage(cfg: DictConfig, device: Device, ref: Path, path: Path, input_shape: list[int]) -> Done:
    """The reference and the variant timed in one session (interleaved), cached per device identity:
    Done(value={"reference": ..., "variant": ..., "bench_s": ...})."""
    key = cache.key_of("bench", device.identity(), ref.parent.name, path.parent.name)
    entry = Path(cfg.cache_dir) / "bench" / f"{key}.json"
    files = [str(ref)] if path == ref else [str(ref), str(path)]

    def work() -> None:
        start, load = time.perf_counter(), machine.load_1m()
        results = device.benchmark(files, input_shape)
        record = {"reference": results[0], "variant": results[-1], "host_load_1m": load}
        cache.write_json(entry, record | {"bench_s": time.perf_counter() - start})

    hold = machine.idle_host if device.exclusive_host else lambda: contextlib.nullcontext(0.0)
    return once("benchmark", entry, lambda: cache.read_json(entry), work, cfg, hold)


def profile_folder(cfg: DictConfig, device: Device, ref: Path, path: Path) -> Path:
    """The profile's cache entry: a folder per device identity and pair of artifacts."""
    key = cache.key_of("profile", device.identity(), ref.parent.name, path.parent.name)
    return Path(cfg.cache_dir) / "profile" / key


def profile_stage(cfg: DictConfig, device: Device, ref: Path, path: Path, input_shape: list[int], folder: Path
                  ) -> Done:  # fmt: skip
    """The reference's and the variant's operators (compress/profile.py), from one more run of each on the device
    with its event tracer on, cached in `folder` (profile_folder): Done(value={"files": [{"table", "p50_ms",
    "named"}, ...], "profile_s"}), the tables beside it. Read in the stage's child: the job process never loads an
    ETRecord."""
    artifacts = [ref] if path == ref else [ref, path]

    def work() -> None:
        start = time.perf_counter()
        folder.mkdir(parents=True, exist_ok=True)
        dumps = device.profile([str(a) for a in artifacts], input_shape, folder)
        files = read_dumps(artifacts, dumps, folder)
        cache.write_json(folder / "profile.json", {"files": files, "profile_s": time.perf_counter() - start})

    hold = machine.idle_host if device.exclusive_host else lambda: contextlib.nullcontext(0.0)
    return once("profile", folder, lambda: cache.read_json(folder / "profile.json"), work, cfg, hold)


def profiled(cfg: DictConfig, device: Device, ref: Path, path: Path, input_shape: list[int], job_dir: Path
             ) -> tuple[dict, str]:  # fmt: skip
    """`profile.csv` in the job dir (the reference's and the variant's operators side by side) and the row's
    profile columns; a profile that failed is a note, the rest of the row stands."""
    folder = profile_folder(cfg, device, ref, path)
    try:
        done = profile_stage(cfg, device, ref, path, input_shape, folder)
    except (StageError, UserError) as exc:
        return {}, f"profile: {one_line(exc)}"
    files = done.value["files"]
    tables = [pd.read_csv(folder / f["table"]) for f in files]
    side_by_side(tables[0], tables[-1]).to_csv(job_dir / "profile.csv", index=False)
    columns = {"profile": str(job_dir / "profile.csv"), "profile_ms_p50": files[-1]["p50_ms"]}
    note = "" if all(f["named"] for f in files) else NO_ETRECORD
    return columns | {"profile_s": done.value["profile_s"], "profile_from": done.source}, note


def net_of_overhead(reference: dict, variant: dict) -> tuple[list[float], list[float], str]:
    """The two files' latencies net of their runtime's cost per call (`call_overhead_ms`, timed on a no-op program
    in the same session; host only), and a note. Where that cost is half a file's time or more, what is left is
    too small to tell from its noise: the raw latencies, and the note says so."""
    raw = reference["samples_ms"], variant["samples_ms"]
    overhead = variant.get("call_overhead_ms") or 0.0
    if overhead and 2 * overhead >= min(map(statistics.median, raw)):
        note = (f"latencies are raw, not net of the runtime's cost per call ({overhead * 1e3:.1f} µs): it is half the "
                "time of a file or more; time this model on a phone")  # fmt: skip
        return list(raw[0]), list(raw[1]), note
    return [s - overhead for s in raw[0]], [s - overhead for s in raw[1]], ""


def measured(ref: dict, out: dict, bench: dict) -> dict:
    """The row's comparison and latency columns: against the reference of the same format, timed beside it."""
    variant, reference = dict(bench["variant"]), bench["reference"]
    reference_ms, samples, overhead_note = net_of_overhead(reference, variant)
    raw, rounds = variant.pop("samples_ms"), variant.pop("round_sizes", None)
    notes = [n for n in [out.get("notes"), *variant.pop("notes", []), overhead_note] if n]
    return variant | latency_columns(samples, rounds) | {"latency_ms_p50_raw": statistics.median(raw)} | (
        speedup_columns(reference_ms, samples, reference.get("round_sizes"), rounds)) | {
        "compression_x": ref["size_bytes"] / out["size_bytes"], "acc_delta": out["acc_top1"] - ref["acc_top1"],
        "macs_reduction_x": ref["macs"] / out["macs"] if out["macs"] else float("nan"),
        "nonzero_reduction_x": ref["nonzero_params"] / out["nonzero_params"] if out["nonzero_params"] else float("nan"),
        "notes": "; ".join(notes), "host_load_1m": bench["host_load_1m"], "bench_s": bench["bench_s"],
    }  # fmt: skip


def run_variant(cfg: DictConfig, device: Device, row: dict) -> None:
    """Fill `row` with one variant's measurements; on an exception `row` keeps what was measured."""
    check_ratio(cfg.ratio)
    with torch_threads(1):  # stages run in forked children: this process must not start an OpenMP pool
        _measure(cfg, device, row)


def _measure(cfg: DictConfig, device: Device, row: dict) -> None:
    device.attach()  # a device that is not there fails the row now, not after training and compressing
    row |= {"train_device": accel.described(accel.check(cfg)), "train_precision": cfg.train.precision}
    data, fmt = build(cfg.dataset), build(cfg.export)
    plan = Plan.of(cfg, cfg.technique, fmt)  # a bad technique knob fails now, not after training
    row |= {"ratio": float("nan") if plan.ratio is None else plan.ratio, "ratio_applies": plan.ratio is not None}
    # ^ failed rows too: one row across ratios
    base, info = base_model(cfg, data)
    row |= info
    ref = artifact_stage(cfg, data, base, Plan.of(cfg, REFERENCE, fmt))
    var = artifact_stage(cfg, data, base, plan)
    (ref_path, ref_out), (path, out) = ref.value, var.value
    row |= out | {"artifact": str(path), "artifact_from": var.source}
    bench = bench_stage(cfg, device, ref_path, path, [1, *data.input_shape])
    row |= measured(ref_out, out, bench.value) | {"bench_from": bench.source}
    if device.profiling:
        columns, note = profiled(cfg, device, ref_path, path, [1, *data.input_shape], Path(row["job_dir"]))
        row |= columns | {"notes": "; ".join(n for n in (row["notes"], note) if n)}
    row["speedup_efficiency"] = row["speedup_x"] / row["macs_reduction_x"]
    row["waited_s"] = info["waited_s"] + ref.waited_s + var.waited_s + bench.waited_s
    row["status"] = "ok"
