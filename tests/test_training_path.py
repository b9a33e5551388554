"""One way for a step to train: the fine-tune recipe from `train:` / `finetune:` (the user's optimizer, schedule and
clipping) with two hook points, after backward and after each optimizer step; no global hooks."""

from __future__ import annotations

import copy

import pytest
import torch

from compress import variant
from compress.config import build
from compress.data import Data
from compress.train import Recipe, fit


def test_fit_calls_after_backward_with_the_gradients_and_after_step_with_the_lr_it_used():
    torch.manual_seed(0)
    data = [(torch.randn(4), int(i % 2)) for i in range(32)]
    model = torch.nn.Sequential(torch.nn.Linear(4, 2))
    before = copy.deepcopy(model.state_dict())
    lrs: list[float] = []

    def no_gradient(m: torch.nn.Module) -> None:
        assert all(p.grad is not None for p in m.parameters())  # backward has run
        for p in m.parameters():
            p.grad.zero_()

    recipe = Recipe(epochs=2, lr=0.1, batch_size=8, momentum=0.5, weight_decay=0.0, schedule="cosine")
    fit(model, data, recipe, seed=0, after_backward=no_gradient, after_step=lrs.append)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the step saw the zeroed grads
    assert len(lrs) == 8 and lrs[0] == pytest.approx(0.1) and lrs == sorted(lrs, reverse=True)  # cosine, per step


@pytest.mark.parametrize("technique, label, hook", [("prune_slim", "sparse training", "after_backward"),
                                                    ("prune_l0gl", "proximal training", "after_step")])  # fmt: skip
def test_the_user_s_optimizer_and_clipping_reach_the_sparse_phase(make_cfg, monkeypatch, technique, label, hook):
    cfg = make_cfg(f"technique={technique}", "model=resnet20", "dataset=fake", "dataset.input_shape=[3,16,16]",
                   "dataset.n_train=64", "dataset.n_test=32", "train.optimizer=adam", "train.grad_clip=1",
                   "technique.steps.prune.lr=0.002", "train.batch_size=32")  # fmt: skip
    for knob in ("sparsity_epochs", "epochs"):
        if knob in cfg.technique.steps.prune:
            cfg.technique.steps.prune[knob] = 1
    seen = []

    def recording(model, train, recipe, seed, distill=None, label="train", **hooks):
        seen.append((recipe.optimizer, recipe.grad_clip, recipe.lr, recipe.epochs, label, sorted(hooks)))
        return fit(model, train, recipe, seed, distill, label, **hooks)

    monkeypatch.setattr(variant, "fit", recording)
    data: Data = build(cfg.dataset)
    base = build(cfg.model)
    ctx = variant.context(cfg, data, base, build(cfg.export))
    build(cfg.technique.steps.prune).apply(copy.deepcopy(base), 0.5, ctx)
    assert seen[0] == ("adam", 1.0, 0.002, 1, label, [hook])
