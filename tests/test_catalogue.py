"""Every model of conf/model/ × every technique of conf/technique/ on tiny synthetic data: each pair is an ok row
whose exported file loads and runs, or a failed row whose one-line error says why the pair does not apply.
A new model or technique joins the matrix by existing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import config_names, fast_host, tiny_cfg

from compress import pipeline
from compress.config import build
from compress.results import fail

CONF = Path(__file__).resolve().parents[1] / "conf"
MODELS = [m for m in config_names("model") if m != "custom"]  # a user's class: tests/test_custom_model.py
TECHNIQUES = config_names("technique")
# Each technique's own measure and how far it must move at ratio 0.5 on every model it applies to (int8: the file).
REDUCES = {
    "prune_magnitude": ("nonzero_reduction_x", 1.5), "deep_compression": ("nonzero_reduction_x", 1.5),
    "prune_channel": ("macs_reduction_x", 1.2), "prune_quant": ("macs_reduction_x", 1.2),
    "prune_qat": ("macs_reduction_x", 1.2), "prune_slim": ("macs_reduction_x", 1.05),
    "quant_static": ("compression_x", 1.5), "qat": ("compression_x", 1.5),
}  # fmt: skip


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
        pipeline.run_variant(cfg, fast_host(), row)
    except Exception as exc:  # noqa: BLE001 — what the CLI does with it
        fail(row, exc)
    reason = does_not_apply(build(cfg.model), technique)
    if reason:
        assert row["status"] == "failed" and row["error"].startswith(reason), row.get("error")
        return
    assert row["status"] == "ok", row["error"]
    assert Path(row["artifact"]).stat().st_size == row["size_bytes"] and row["latency_ms_p50"] > 0
    if technique in REDUCES:
        column, least = REDUCES[technique]
        assert row[column] > least, (column, row[column])
    loaded = build(cfg.export).load(Path(row["artifact"]))
    assert loaded(torch.randn(1, 3, 16, 16)).shape == (1, 10)
