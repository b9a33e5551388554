"""Every model of conf/model/ × every technique of conf/technique/ on tiny synthetic data: each pair is an ok row
whose exported file loads and runs, or a failed row whose one-line error says why the pair does not apply.
A new model or technique joins the matrix by existing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import open_dict

from adb_bench.host import HostDevice
from compress import pipeline
from compress.config import build
from compress.results import fail

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
TECHNIQUES = sorted(p.stem for p in (CONF / "technique").glob("*.yaml"))
TINY = (
    "dataset=fake", "dataset.input_shape=[3,16,16]", "dataset.n_train=64", "dataset.n_test=32", "train.epochs=1",
    "train.batch_size=32", "finetune.epochs=0", "finetune.between_epochs=0", "ratio=0.5",
    "technique.calibration_batches=1", "technique.taylor_batches=1", "technique.sparsity_epochs=1",
    "technique.epochs=1", "technique.max_iter=3",
)  # fmt: skip
# Smaller members of the big models' families, so the matrix fits CI: VGG-16 and MobileNetV2 at reduced width (the
# same code, a tenth of the weights or less), and a small torchvision classifier (squeeze-and-excitation,
# hard-swish) for the `torchvision` config.
SMALLER = {
    "vgg16_bn_cifar": ["model.width=0.25"],
    "mobilenet_v2": ["model.width_mult=0.35"],
    "torchvision": ["model.name=mobilenet_v3_small"],
}
# Speed knobs that only some techniques have (iterations of the CP-ALS inside prune_cp, ...), set on their steps.
STEP_KNOBS = {"max_iter": 3}


def tiny_cfg(make_cfg, model: str, technique: str):
    overrides = [o for o in TINY if not o.startswith("technique.")]
    cfg = make_cfg(f"model={model}", f"technique={technique}", *overrides, *SMALLER.get(model, []))
    for override in TINY:  # technique knobs only where the technique has them
        key, value = override.removeprefix("technique.").split("=")
        if override.startswith("technique.") and key in cfg.technique:
            cfg.technique[key] = type(cfg.technique[key])(value)
    for step in cfg.technique.steps:
        if step._target_.endswith("CPDecompose"):
            with open_dict(step):
                step.update(STEP_KNOBS)
    return cfg


def does_not_apply(model: torch.nn.Module, technique: str) -> str | None:
    """The one-line reason a pair must fail, or None when it must work."""
    has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    has_conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    if technique == "prune_slim" and not has_bn:
        return "UserError: network slimming needs BatchNorm layers"
    if technique == "prune_cp" and not has_conv:  # it magnitude-prunes the convolutions before decomposing them
        return "UserError: magnitude pruning of conv layers does not apply"
    return None


@pytest.mark.slow
@pytest.mark.parametrize("technique", TECHNIQUES)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_technique_pair_is_a_working_row_or_says_why_not(make_cfg, model, technique):
    cfg = tiny_cfg(make_cfg, model, technique)
    row: dict = {"status": "failed"}
    try:
        pipeline.run_variant(cfg, HostDevice(warmup=1, iters=1, min_time_s=0), row)
    except Exception as exc:  # noqa: BLE001 — what the CLI does with it
        fail(row, exc)
    reason = does_not_apply(build(cfg.model), technique)
    if reason:
        assert row["status"] == "failed" and row["error"].startswith(reason), row.get("error")
        return
    assert row["status"] == "ok", row["error"]
    assert Path(row["artifact"]).stat().st_size == row["size_bytes"] and row["latency_ms_p50"] > 0
    loaded = build(cfg.export).load(Path(row["artifact"]))
    assert loaded(torch.randn(1, 3, 16, 16)).shape == (1, 10)
