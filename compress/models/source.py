"""What a model config builds, for cache keys: the config itself and the source of the code behind it, so that
editing a model's module (yours or the zoo's) trains its base model again."""

from __future__ import annotations

import hashlib
import inspect
import sys

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

CODE_KEYS = ("_target_", "target")  # the zoo's constructor; model=custom's own class or function


def source_digest(path: str) -> str | None:
    """sha256 of the source file of the module that defines `path` (None when it cannot be found)."""
    try:
        found = get_object(path)
        module = sys.modules[found.__module__] if hasattr(found, "__module__") else None
        source = inspect.getsourcefile(module) if module else None
    except Exception:  # noqa: BLE001 — the build reports an unimportable target in its own words
        return None
    if source is None:
        return None
    with open(source, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def model_identity(node: DictConfig) -> dict:
    """The model's config without `checkpoint` (its weights are keyed by content where they matter), and the
    source digest of each module its code comes from."""
    spec = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "checkpoint"}
    return spec | {"source": {k: source_digest(spec[k]) for k in CODE_KEYS if spec.get(k)}}
