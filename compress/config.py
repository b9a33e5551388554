"""Turning config nodes into objects, and checking the top-level knobs."""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from compress.cache import key_of
from compress.data import Data
from compress.errors import UserError

# Keys that describe a node or that the pipeline handles itself: never constructor arguments.
NOT_ARGUMENTS = ("name", "checkpoint", "min_size", "workers")
# Dataset keys that say where the data is, not what it is: never in a cache key (a moved cache or data still hits).
LOCATION_KEYS = ("root", "cache_dir", "download")


def build(node: DictConfig | dict, **kwargs: Any) -> Any:
    """Instantiate a config node (its `_target_`) without the keys in NOT_ARGUMENTS."""
    spec = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    for key in NOT_ARGUMENTS:
        spec.pop(key, None)
    try:
        return instantiate(spec, **kwargs, _convert_="all")
    except InstantiationException as exc:  # Hydra wraps what the target raised: the row says that, in one line
        cause = exc.__cause__
        if isinstance(cause, ImportError) and isinstance(cause.__cause__, UserError):
            cause = cause.__cause__  # the target's module said why it cannot be imported (a missing extra)
        if cause is not None:
            raise cause from None
        raise


def plain(node: DictConfig | None) -> Any:
    """A resolved, JSON-ready copy of a config node (for cache keys and logs)."""
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def dataset_identity(node: DictConfig, data: Data) -> dict:
    """What determines a data set's samples: its config without location keys, plus the content digest of
    data read from files (`Data.content`)."""
    spec = {k: v for k, v in plain(node).items() if k not in LOCATION_KEYS}
    return spec | ({"content": data.content} if data.content else {})


def data_key(cfg: DictConfig, data: Data) -> str:
    """What identifies the data and the arithmetic (threads) behind a result derived from it; no paths."""
    return key_of("data", dataset_identity(cfg.dataset, data), cfg.threads)


def check_ratio(ratio: object) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0.0 <= ratio < 1.0:
        raise UserError(f"ratio must be a number in [0, 1) (the fraction a technique removes), got {ratio!r}")
