"""Network slimming (Liu et al. 2017): sparse training with an L1 penalty on BatchNorm scales, then
removing the channels whose scales were driven towards zero (BN-scale channel pruning)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

from compress.errors import UserError
from compress.techniques.base import Context
from compress.techniques.prune import ChannelPrune


def bn_scales(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine]


class SlimPrune(ChannelPrune):
    """`sparsity_epochs` of training with `penalty · Σ|γ|` added to the loss (at learning rate `lr`),
    then BN-scale channel pruning. With `scope: global` (the paper's) one threshold on the raw |γ|
    of all layers decides, so layers whose scales shrank most lose most channels.

    Every optimizer step moves each |γ| by about lr·penalty towards zero: the paper's 1e-4 works over
    ~160 epochs at lr 0.1; a run of a few epochs needs a penalty a hundred times larger."""

    def __init__(
        self,
        ratio: float | None = None,
        penalty: float = 5e-2,
        sparsity_epochs: int = 3,
        lr: float = 0.01,
        scope: str = "global",
        iterations: int = 1,
        retrain_increments: bool = True,
        max_layer_ratio: float = 0.9,
        skip: Sequence[str] = (),
    ):
        super().__init__(ratio, "bn_scale", scope, iterations, retrain_increments, max_layer_ratio=max_layer_ratio,
                         skip=skip)  # fmt: skip
        self.penalty = penalty
        self.sparsity_epochs = sparsity_epochs
        self.lr = lr

    def check_model(self, model: nn.Module) -> None:
        if not bn_scales(model):
            raise UserError(
                f"network slimming needs BatchNorm layers and {type(model).__name__} has none; "
                "use technique=prune_channel (importance l1, l2, taylor or group_norm)"
            )

    def make_importance(self) -> tp.importance.Importance:
        return tp.importance.BNScaleImportance(normalizer=None)  # raw |γ|, comparable across layers

    def sparsify(self, model: nn.Module, ctx: Context) -> nn.Module:
        """The sparse-training phase: push BN scales towards zero with an L1 penalty."""
        self.check_model(model)
        return ctx.finetune(model, self.sparsity_epochs, lr=self.lr, label="sparse training",
                            after_backward=self.l1_subgradient)  # fmt: skip

    def l1_subgradient(self, model: nn.Module) -> None:
        """The gradient of penalty·Σ|γ| added to the BN scales' (Liu et al.'s `updateBN`)."""
        with torch.no_grad():
            for gamma in bn_scales(model):
                if gamma.grad is not None:
                    gamma.grad.add_(self.penalty * torch.sign(gamma))

    def apply(self, model: nn.Module, ratio: float, ctx: Context) -> nn.Module:
        return super().apply(self.sparsify(model, ctx), ratio, ctx)
