"""Combined pipelines: prune → int8, Tucker → int8, 90% magnitude prune → CP, prune → QAT."""

from __future__ import annotations

import pytest
from conftest import fast_host

from compress import pipeline
from compress.config import build
from compress.techniques.lowrank import CPDecompose, n_params
from compress.techniques.prune import MagnitudePrune

QUICK = ("ratio=0.5", "train.epochs=1", "finetune.epochs=1", "finetune.between_epochs=1")


def run(make_cfg, technique: str, *overrides: str) -> dict:
    row: dict = {}
    cfg = make_cfg(f"technique={technique}", *QUICK, *overrides)
    pipeline.run_variant(cfg, fast_host(), row)
    assert row["status"] == "ok"
    return row


def test_prune_cp_prunes_at_a_fixed_90_percent_and_decomposes_at_the_sweep_ratio(make_cfg):
    prune, cp = (build(s) for s in make_cfg("technique=prune_cp", "ratio=0.5").technique.steps.values())
    assert isinstance(prune, MagnitudePrune) and prune.ratio == 0.9 and not prune.takes_sweep_ratio
    assert isinstance(cp, CPDecompose) and cp.takes_sweep_ratio


@pytest.mark.slow
def test_prune_quant_file_is_smaller_than_either_step_alone(make_cfg):
    sizes = {t: run(make_cfg, t, "finetune.epochs=0")["size_bytes"] for t in ("prune_channel", "quant_static")}
    assert run(make_cfg, "prune_quant", "finetune.epochs=0")["size_bytes"] < min(sizes.values())


@pytest.mark.slow
@pytest.mark.parametrize("technique", ["tucker_quant", "prune_cp", "prune_qat"])
def test_combined_pipelines_run_end_to_end_smaller_and_accurate(make_cfg, technique):
    row = run(make_cfg, technique)
    assert row["params"] < n_params(build(make_cfg().model)) and row["acc_top1"] > 0.8
    if technique == "prune_cp":  # CP of LeNet's one eligible conv saves less than its extra modules cost in the file
        assert "magnitude pruning: 90.0%" in row["notes"] and "cp features.3: rank 37" in row["notes"]
    else:  # int8
        assert row["compression_x"] > 2
