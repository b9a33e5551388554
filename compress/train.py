"""The training loop (base training and fine-tuning, optionally distilled) and top-k evaluation."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset
from tqdm import tqdm
from tqdm.contrib.logging import tqdm_logging_redirect

from compress import accel
from compress.data import make_loader
from compress.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class Recipe:
    """How to train: one `train:` or `finetune:` config block."""

    epochs: int
    lr: float
    batch_size: int = 64
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    grad_clip: float | None = None  # max global gradient norm; None = no clipping

    @classmethod
    def of(cls, node: Mapping, **changes: object) -> Recipe:
        """The recipe in a `train:`-like block (its device and precision knobs are compress/accel.py's)."""
        given = {f.name: node[f.name] for f in fields(cls) if f.name in node}
        return cls(**(given | changes))


@dataclass
class Distill:
    """Hinton et al. 2015: alpha·T²·KL(student/T ‖ teacher/T) + (1 − alpha)·cross-entropy."""

    teacher: nn.Module
    temperature: float = 4.0
    alpha: float = 0.9

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft_targets = F.log_softmax(self.teacher(x) / self.temperature, dim=1)
        soft = F.kl_div(
            F.log_softmax(logits / self.temperature, dim=1), soft_targets, log_target=True,
            reduction="batchmean",
        )  # fmt: skip
        hard = F.cross_entropy(logits, y)
        return self.alpha * self.temperature**2 * soft + (1 - self.alpha) * hard


def _optimizer(model: nn.Module, r: Recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if r.optimizer == "sgd":
        return torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, weight_decay=r.weight_decay, nesterov=True)
    if r.optimizer == "adam":
        return torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay)
    raise UserError(f"unknown optimizer {r.optimizer!r}; use sgd or adam")


def _scheduler(opt: torch.optim.Optimizer, r: Recipe, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    if r.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    if r.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=max(steps // 3, 1), gamma=0.1)
    if r.schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0)
    raise UserError(f"unknown lr schedule {r.schedule!r}; use cosine, step or constant")


def _progress(batches: int, label: str) -> AbstractContextManager[tqdm]:
    """A bar over `batches` on a terminal, with the console log redirected above it; disabled when stdout
    is not a terminal (CI, a pipe, a log file): then only the log lines appear, free of control characters."""
    return tqdm_logging_redirect(total=batches, desc=label, unit="batch", file=sys.stdout,
                                 disable=not sys.stdout.isatty(), leave=False, dynamic_ncols=True)  # fmt: skip


def fit(
    model: nn.Module,
    train: Dataset,
    recipe: Recipe,
    seed: int,
    distill: Distill | None = None,
    label: str = "train",
    after_backward: Callable[[nn.Module], None] | None = None,
    after_step: Callable[[float], None] | None = None,
) -> nn.Module:
    """Train `model` in place for `recipe.epochs` (0 is allowed) and return it in eval mode.

    The two points where a compression step acts on training (Torch-Pruning's `regularize` is the first):
    `after_backward(model)` with the batch's gradients in place (unscaled), before clipping and the optimizer
    step (e.g. the subgradient of an L1 penalty); `after_step(lr)` after each optimizer step, with the learning
    rate it used (e.g. a proximal step). Progress: a bar (`label`, batches, epoch, mean loss) on a terminal;
    `label epoch i/n loss` log lines.
    """
    if recipe.epochs <= 0:
        return model.eval()
    torch.manual_seed(seed)
    training = accel.current()
    loader = make_loader(train, recipe.batch_size, shuffle=True, seed=seed, workers=training.workers,
                         pin_memory=training.pin_memory)  # fmt: skip
    model.to(training.device)
    if distill:
        distill.teacher.to(training.device)
    opt, scaler = _optimizer(model, recipe), training.scaler()
    sched = _scheduler(opt, recipe, recipe.epochs * len(loader))
    with _progress(recipe.epochs * len(loader), label) as progress:
        for epoch in range(recipe.epochs):
            model.train()
            total, batches = 0.0, 0
            for x, y in loader:
                x, y = x.to(training.device, non_blocking=True), y.to(training.device, non_blocking=True)
                with training.autocast():
                    logits = model(x)
                    loss = distill.loss(logits, x, y) if distill else F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if recipe.grad_clip or after_backward:
                    scaler.unscale_(opt)
                if after_backward:
                    after_backward(model)
                if recipe.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
                lr = opt.param_groups[0]["lr"]
                scaler.step(opt)
                scaler.update()
                if after_step:
                    after_step(lr)
                sched.step()
                total, batches = total + loss.item(), batches + 1
                progress.set_postfix_str(f"epoch {epoch + 1}/{recipe.epochs} loss {total / batches:.4f}", False)
                progress.update()
            log.info("%s epoch %d/%d loss %.4f", label, epoch + 1, recipe.epochs, total / max(batches, 1))
    if distill:
        distill.teacher.cpu()
    return model.cpu().eval()  # export and every CPU-side measurement take it from here


@torch.no_grad()
def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], test: Dataset, batch_size: int = 250) -> dict:
    """Top-1 and top-5 accuracy of any callable mapping a batch to logits (a module or a loaded .ptl)."""
    device = accel.current().device if isinstance(forward, nn.Module) else torch.device("cpu")  # a file: the CPU
    if isinstance(forward, nn.Module):
        forward.to(device).eval()
    top1 = top5 = n = 0
    for x, y in make_loader(test, batch_size, shuffle=False, workers=accel.current().workers):
        logits = forward(x.to(device)).cpu()
        k = min(5, logits.shape[1])
        best = logits.topk(k, dim=1).indices
        top1 += (best[:, 0] == y).sum().item()
        top5 += (best == y[:, None]).any(dim=1).sum().item()
        n += len(y)
    if isinstance(forward, nn.Module):
        forward.cpu()
    return {"acc_top1": top1 / n, "acc_top5": top5 / n}
