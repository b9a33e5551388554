"""Sweep presets: `sweep=quickstart` composes into the expected variants and runs end to end."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest
from conftest import ROOT, cli, config_names
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ValueType
from omegaconf import DictConfig

from compress.search import register_resolver

TECHNIQUES = set(config_names("technique"))
NEEDS_BATCHNORM = {"prune_slim"}  # network slimming scales BN layers; LeNet-5 has none


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", list(overrides), return_hydra_config=True)


def _variants(cfg: DictConfig) -> list[dict[str, str]]:
    """The jobs `hydra.sweeper.params` expands to (the basic sweeper's cartesian product)."""
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    overrides = OverridesParser.create().parse_overrides(params)
    axes = [[(o.get_key_element(), v) for v in _values(o)] for o in overrides]
    return [dict(combo) for combo in itertools.product(*axes)]


def _values(override) -> list[str]:
    """A sweep's values; a glob over a config group (`technique=glob(*,exclude=[...])`) against its files."""
    if override.value_type == ValueType.GLOB_CHOICE_SWEEP:
        group = ROOT / "conf" / override.get_key_element()
        return override.value().filter(sorted(p.stem for p in group.glob("*.yaml")))
    return list(override.sweep_string_iterator())


def test_quickstart_is_every_technique_on_lenet5_mnist5k():
    cfg = _compose("sweep=quickstart")
    assert cfg.hydra.mode.name == "MULTIRUN"
    assert (cfg.model.name, cfg.dataset.name) == ("lenet5", "mnist5k")
    variants = _variants(cfg)
    named = {v["technique"] for v in variants}
    ratios = sorted({float(v["ratio"]) for v in variants})
    assert len(variants) == len(named) * len(ratios) and 1 <= len(ratios) <= 2
    assert named - TECHNIQUES == set(), "the preset names techniques that conf/technique/ does not have"
    assert TECHNIQUES - NEEDS_BATCHNORM - named == set(), "a technique in conf/technique/ is missing from quickstart"
    for v in variants:  # each job composes
        job = _compose("sweep=quickstart", *(f"{k}={x}" for k, x in v.items()))
        assert (job.technique.name, job.ratio) == (v["technique"], float(v["ratio"]))


@pytest.mark.parametrize("preset", ["thesis", "mobile"])
def test_other_presets_compose_every_job(preset):
    variants = _variants(_compose(f"sweep={preset}"))
    assert {v["technique"] for v in variants} <= TECHNIQUES
    for v in variants:
        job = _compose(f"sweep={preset}", *(f"{k}={x}" for k, x in v.items()))
        assert job.technique.name == v["technique"] and job.model.min_size <= min(job.dataset.input_shape[1:])


def test_thesis_is_the_seed_matrix():
    pairs = set()
    for v in _variants(_compose("sweep=thesis")):
        job = _compose("sweep=thesis", *(f"{k}={x}" for k, x in v.items()))
        pairs.add((job.model.name, job.dataset.name))
    assert pairs == {("lenet5", "mnist"), ("alexnet_cifar", "cifar10"), ("vgg16_bn_cifar", "cifar10")}


@pytest.mark.slow
def test_reduced_quickstart_runs_end_to_end(tmp_path):
    """The README's command with short training, at one ratio, over the preset's techniques that exist."""
    techniques = sorted({v["technique"] for v in _variants(_compose("sweep=quickstart"))} & TECHNIQUES)
    command = [
        "sweep=quickstart", f"technique={','.join(techniques)}", "ratio=0.5",
        "train.epochs=1", "finetune.epochs=0", "finetune.between_epochs=0", "dataset.limit_train=500",
        "dataset.limit_test=100", "device.warmup=1", "device.iters=2", "device.min_time_s=0", "device.rounds=1",
        f"cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]  # fmt: skip
    done = cli(*command, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    table = pd.read_csv(tmp_path / "sweep" / "summary.csv")
    assert sorted(table["technique"]) == techniques
    assert (table["status"] == "ok").all(), table[["technique", "error"]].to_string()
    assert set(table["model"]) == {"lenet5"} and set(table["dataset"]) == {"mnist5k"}
    assert "summary:" in done.stdout


def test_search_samples_every_technique_but_prune_slim_and_ratio():
    register_resolver()  # as the CLI does before Hydra composes
    cfg = _compose("sweep=search")
    params = {k: OverridesParser.create().parse_override(f"{k}={v}") for k, v in cfg.hydra.sweeper.params.items()}
    assert set(params["technique"].value().list) == TECHNIQUES - NEEDS_BATCHNORM
    assert (params["ratio"].value().start, params["ratio"].value().end) == (0.1, 0.95)
    assert list(cfg.hydra.sweeper.direction) == ["maximize", "minimize"]  # acc_top1 up, latency_ms_p50 down
