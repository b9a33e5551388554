"""Any timm model by name (`model=timm model.name=mobilenetv3_small_050`), built by timm for the data set's channels
and classes (`in_chans`, `num_classes`).

`pretrained=true` loads the model's default weights with timm's own code (the Hugging Face Hub, cached under
`$HF_HOME`); without network, `pretrained_file=PATH` loads a weight file fetched elsewhere through the same code
(timm sums or repeats the RGB filters of the stem for other channel counts and drops the classifier whose classes
differ).

timm's `BatchNormAct2d` (batch norm and activation in one module, its own copy of batch norm's forward) becomes a
`BatchNorm2d` followed by the activation: FX tracing would bake its training flag into the graph (a model prepared for
quantization-aware training would normalise with batch statistics ever after), and torch.ao fuses a plain batch norm
into its convolution where it leaves timm's unfused. The weights are the same; their names gain `.norm`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import timm
from huggingface_hub.errors import LocalEntryNotFoundError
from timm.layers import BatchNormAct2d
from torch import nn

from compress.errors import UserError, first_line

SMALL = 64  # below this many pixels a side, `stem_stride=auto` makes the first convolution stride 1


def _weights_source(arch: str) -> str:
    """Where timm fetches `arch`'s default weights: a Hugging Face Hub repository, else a URL."""
    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return "nowhere"
    return f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else (cfg.url or "nowhere")


def _create(arch: str, pretrained: bool, pretrained_file: str | None, options: dict) -> nn.Module:
    """`timm.create_model`; a weight file that cannot be fetched becomes one line that says where to get it."""
    overlay = {"file": pretrained_file} if pretrained_file else None
    try:
        return timm.create_model(arch, pretrained=pretrained or bool(pretrained_file),
                                 pretrained_cfg_overlay=overlay, **options)  # fmt: skip
    except (LocalEntryNotFoundError, OSError) as exc:  # no network and not in the Hugging Face cache
        if not (pretrained or pretrained_file):
            raise
        raise UserError(
            f"could not load the pretrained weights of {arch} ({first_line(exc)[:120]}); without network, download "
            f"them from {_weights_source(arch)} elsewhere and pass model.pretrained_file=PATH (or set HF_HOME to a "
            "cache that holds them)"
        ) from exc
    except RuntimeError as exc:  # e.g. a state_dict of another model
        if not (pretrained or pretrained_file):
            raise
        raise UserError(f"the pretrained weights do not fit {arch} with {options}: {first_line(exc)}") from exc


def _first_convs(model: nn.Module) -> list[nn.Conv2d]:
    """The stem's convolution(s) as timm names them (several where a re-parameterisable stem runs branches side by
    side), else the first Conv2d."""
    named = getattr(model, "pretrained_cfg", {}).get("first_conv")
    names = [named] if isinstance(named, str) else list(named or ())
    convs = [m for n in names if isinstance(m := model.get_submodule(n), nn.Conv2d)]
    return convs or [next(m for m in model.modules() if isinstance(m, nn.Conv2d))]


def split_norm_act(model: nn.Module) -> None:
    """Every `BatchNormAct2d` of `model` replaced by a plain `BatchNorm2d` (the same weights and statistics), its
    dropout (where it has one) and its activation in sequence."""
    for name, module in list(model.named_modules()):
        if isinstance(module, BatchNormAct2d):
            norm = nn.BatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                  module.track_running_stats)  # fmt: skip
            norm.load_state_dict(module.state_dict(), strict=False)  # the activation holds no weights
            parent, _, attr = name.rpartition(".")
            parts = {"norm": norm, "drop": module.drop, "act": module.act}
            if isinstance(module.drop, nn.Identity):  # between the norm and the activation it would block fusion
                del parts["drop"]
            split = nn.Sequential(OrderedDict(parts)).train(module.training)
            setattr(model.get_submodule(parent), attr, split)


def timm_model(
    input_shape: Sequence[int],
    num_classes: int,
    arch: str,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    stem_stride: int | str = "auto",
    **options,
) -> nn.Module:
    """`timm.create_model(arch, in_chans=C, num_classes=K, **options)`, with the stem's stride for small images.

    `stem_stride`: `auto` keeps timm's stride for inputs of 64 px and more and uses 1 below (CIFAR-sized images
    would otherwise shrink to 1×1 long before the head); an integer sets it.
    """
    if not timm.is_model(arch):
        raise UserError(f"unknown timm model {arch!r}; see timm.list_models('mobile*') for names")
    model = _create(arch, pretrained, pretrained_file, {"in_chans": input_shape[0], "num_classes": num_classes,
                                                        **options})  # fmt: skip
    for conv in _first_convs(model):
        stride = (1 if min(input_shape[1:]) < SMALL else conv.stride[0]) if stem_stride == "auto" else int(stem_stride)
        conv.stride = (stride, stride)
    split_norm_act(model)
    return model
