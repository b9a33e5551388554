"""A step's knobs are written once (conf/step/, one file per step kind) and every technique composes its steps
from them: each constructor argument of each step is a key of its node, so `technique.steps.NAME.KNOB=...` reaches
it in every technique that has the step. Composed and built, no training (cheap)."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch
from conftest import ROOT, config_names
from hydra.utils import get_class
from omegaconf import OmegaConf

from compress.config import build
from compress.techniques.prune import ChannelPrune


def arguments(target: str) -> dict[str, inspect.Parameter]:
    return {k: p for k, p in inspect.signature(get_class(target).__init__).parameters.items() if k != "self"}


@pytest.mark.parametrize("technique", config_names("technique"))
def test_every_argument_of_every_step_is_a_knob_of_the_technique(make_cfg, technique):
    node = make_cfg(f"technique={technique}").technique
    for name, step in node.steps.items():
        missing = set(arguments(step._target_)) - set(step)
        assert not missing, f"technique.steps.{name} lacks {missing}"
    assert len([build(s) for s in node.steps.values()]) == len(node.steps)


@pytest.mark.parametrize("kind", config_names("step"))
def test_a_step_file_states_the_constructor_s_defaults(kind):
    """One default per knob: the step file's literal values are the constructor's (interpolations such as
    `${finetune.lr}` aside)."""
    node = OmegaConf.load(ROOT / "conf" / "step" / f"{kind}.yaml")
    raw = OmegaConf.to_container(node, resolve=False)
    for knob, parameter in arguments(node._target_).items():
        if isinstance(raw[knob], str) and raw[knob].startswith("${"):
            continue
        default = list(parameter.default) if isinstance(parameter.default, tuple) else parameter.default
        assert raw[knob] == default, (kind, knob)


@pytest.mark.parametrize("technique", ["prune_channel", "prune_quant", "prune_qat"])
def test_channel_knobs_reach_the_channel_step_of_every_technique_that_has_one(make_cfg, technique):
    knobs = {"taylor_batches": 4, "max_layer_ratio": 0.7, "round_to": 8, "importance": "l2", "iterations": 2}
    cfg = make_cfg(f"technique={technique}", *(f"technique.steps.prune.{k}={v}" for k, v in knobs.items()))
    step = build(cfg.technique.steps.prune)
    assert isinstance(step, ChannelPrune) and {k: getattr(step, k) for k in knobs} == knobs


def test_a_combination_overrides_only_what_differs(make_cfg):
    steps = make_cfg("technique=deep_compression", "technique.steps.cluster.bits=3").technique.steps
    assert (steps.prune.scope, steps.cluster.bits, steps.quant.observer) == ("global", 3, "minmax")
    cp = make_cfg("technique=prune_cp", "technique.steps.decompose.max_iter=7").technique.steps
    assert (cp.prune.ratio, list(cp.prune.layers), cp.decompose.max_iter) == (0.9, ["conv"], 7)


def widths(model: torch.nn.Module) -> dict[str, int]:
    return {n: m.weight.shape[0] for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)}


def test_round_to_leaves_every_pruned_layer_a_multiple_of_its_channels(lenet, lenet_context):
    before = widths(lenet)
    rounded = widths(ChannelPrune(round_to=8, retrain_increments=False).apply(copy.deepcopy(lenet), 0.5, lenet_context))
    plain = widths(ChannelPrune(retrain_increments=False).apply(lenet, 0.5, lenet_context))
    pruned = {n: w for n, w in rounded.items() if w != before[n]}
    assert len(pruned) >= 3 and all(w % 8 == 0 for w in pruned.values()), (before, rounded)
    assert any(plain[n] % 8 for n in pruned), plain  # without it, half of 84 features is 42


def test_round_to_must_be_a_positive_integer():
    with pytest.raises(Exception, match=r"round_to=0 must be a positive integer"):
        ChannelPrune(round_to=0)


def test_the_readme_lists_each_technique_s_steps_as_composed(make_cfg):
    rows = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    listed = {line.split("`")[1]: line.split("|")[2].strip() for line in rows if "`: " in line or "| — |" in line}
    for technique in config_names("technique"):
        defaults = OmegaConf.load(ROOT / "conf" / "technique" / f"{technique}.yaml").get("defaults", [])
        steps = [f"`{k.split('.')[-1]}`: {v}" for d in defaults if not isinstance(d, str) for k, v in d.items()]
        assert listed[technique] == (", ".join(steps) or "—"), technique
