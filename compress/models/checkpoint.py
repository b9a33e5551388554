"""The user's own trained weights (`model.checkpoint=PATH`) and the input sizes a model fits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from compress.errors import UserError, first_line


def file_digest(path: str | Path) -> str:
    """sha256 of a file's content: a checkpoint's identity in cache keys."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_dict(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"model.checkpoint={path}: no such file; pass a state_dict saved with torch.save")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure: not a plain state_dict
        raise UserError(f"model.checkpoint={path} is not a plain state_dict ({first_line(exc)})") from exc
    if not isinstance(state, dict):
        raise UserError(f"model.checkpoint={path} holds a {type(state).__name__}, not a state_dict")
    return state


def _misfits(own: dict, state: dict) -> list[str]:
    """What does not fit, most telling first: wrong shapes, then missing and unexpected keys."""
    wrong = [
        f"{k} is {list(state[k].shape)} in the file, {list(v.shape)} in the model"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    missing = [f"{k} missing from the file" for k in own if k not in state]
    return wrong + missing + [f"unexpected key {k}" for k in state if k not in own]


def load_checkpoint(model: nn.Module, path: str | Path, model_name: str) -> None:
    """Load a state_dict into `model`; keys or shapes that do not fit → one line saying which."""
    state = _state_dict(Path(path))
    misfits = _misfits(model.state_dict(), state)
    if misfits:
        raise UserError(
            f"model.checkpoint={path} does not fit model {model_name} on this data set ({len(misfits)} tensors, "
            f"e.g. {misfits[0]}); check model=, its options and dataset="
        )
    model.load_state_dict(state)


def check_input_size(model_name: str, min_size: int | None, input_shape: Sequence[int]) -> None:
    """A data set whose images are smaller than the model's `min_size` → one line, not a shape error."""
    if min_size is not None and min(input_shape[1:]) < min_size:
        raise UserError(
            f"model {model_name} needs inputs of at least {min_size}×{min_size} px, the data set has "
            f"{list(input_shape)}; choose another model or dataset"
        )
