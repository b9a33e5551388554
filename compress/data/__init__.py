"""Data sets: each config in `conf/dataset/` names a loader here that returns a `Data`."""

from compress.data.base import Data, make_loader

__all__ = ["Data", "make_loader"]
