"""Any torchvision classification model by name, adapted to the data set's channels, size and classes.

`pretrained=True` loads torchvision's DEFAULT weights the way torchvision does (downloaded once into
`$TORCH_HOME/hub/checkpoints/`); the first convolution then takes the data set's channels (RGB
filters averaged) and the last linear layer is replaced by a fresh one for `num_classes`.
"""

from __future__ import annotations

import logging
import urllib.error
from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from compress.errors import UserError

log = logging.getLogger(__name__)


def _weights(arch: str, pretrained: bool) -> torchvision.models.WeightsEnum | None:
    if not pretrained:
        return None
    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (KeyError, ValueError, AttributeError) as exc:
        raise UserError(f"torchvision has no pretrained weights for {arch!r}; set model.pretrained=false") from exc


def _construct(arch: str, weights: torchvision.models.WeightsEnum | None, options: dict) -> nn.Module:
    """torchvision's own builder; a missing weight file without network becomes one line."""
    try:
        return torchvision.models.get_model(arch, weights=weights, **options)
    except urllib.error.URLError as exc:
        where = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        raise UserError(
            f"could not download the pretrained weights of {arch} ({exc.reason}); without network, "
            f"put {weights.url} at {where} (or set TORCH_HOME)"
        ) from exc
    except RuntimeError as exc:
        if weights is None:
            raise
        raise UserError(f"pretrained {arch} weights do not fit the options {options}: {exc}") from exc


def _named(model: nn.Module, kind: type[nn.Module], last: bool) -> tuple[str, nn.Module]:
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, kind)]
    if not found:
        raise UserError(f"{type(model).__name__} has no {kind.__name__} layer to adapt to the data set")
    return found[-1] if last else found[0]


def _stem(old: nn.Conv2d, channels: int, stride: int) -> nn.Conv2d:
    """The first convolution for `channels` inputs and `stride`, keeping the learned filters."""
    new = nn.Conv2d(
        channels, old.out_channels, old.kernel_size, stride, old.padding, old.dilation, old.groups, old.bias is not None
    )
    with torch.no_grad():
        rgb = old.weight if channels == old.in_channels else old.weight.mean(1, keepdim=True)
        new.weight.copy_(rgb.expand_as(new.weight))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    return new


def torchvision_model(
    input_shape: Sequence[int],
    num_classes: int,
    arch: str,
    pretrained: bool = False,
    stem_stride: int | str = "auto",
    **options,
) -> nn.Module:
    """`torchvision.models.get_model(arch, **options)`, adapted.

    `stem_stride`: the stride of the first convolution; `auto` keeps torchvision's for inputs of 64 px
    and more and uses 1 below (CIFAR-sized images would otherwise shrink to 1×1 long before the end).
    """
    if arch not in torchvision.models.list_models(torchvision.models):
        raise UserError(f"unknown torchvision classification model {arch!r}; see torchvision.models.list_models()")
    model = _construct(arch, _weights(arch, pretrained), options)
    name, conv = _named(model, nn.Conv2d, last=False)
    stride = (1 if min(input_shape[1:]) < 64 else conv.stride[0]) if stem_stride == "auto" else int(stem_stride)
    if conv.in_channels != input_shape[0] or conv.stride[0] != stride:
        model.set_submodule(name, _stem(conv, input_shape[0], stride))
    name, fc = _named(model, nn.Linear, last=True)
    if fc.out_features != num_classes:
        model.set_submodule(name, nn.Linear(fc.in_features, num_classes))
    return model
