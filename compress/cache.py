"""The stage cache: content-hash keys, atomic writes, and the lock of an entry (one job computes it, the others
wait for it and read it)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock, Timeout

from compress.errors import UserError

log = logging.getLogger(__name__)

# Bump when a stage's output changes meaning for the same config (invalidates every entry).
CACHE_VERSION = 2


def key_of(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (dicts are key-sorted), the cache version and torch's."""
    blob = json.dumps([CACHE_VERSION, torch.__version__, *parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then rename onto `path`, so readers never see a partial file. The temporary file has
    `path`'s own name (in a private temporary folder beside it): formats that record their file name (a .ptl
    archive names its root folder after it) come out byte-identical whoever writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.")
    tmp = os.path.join(folder, path.name)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=1, default=str)))


def read_json(path: Path) -> Any | None:
    """The parsed file, or None when it is missing or unreadable (a corrupt entry is rebuilt)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("cache entry %s is unreadable (%s); rebuilding it", path, exc)
        return None


def save_state(path: Path, obj: dict) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_state(path: Path) -> dict | None:
    """A `torch.save`d dict of tensors and plain values, or None when missing or corrupt."""
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means: rebuild
        log.warning("cache entry %s is unreadable (%s); rebuilding it", path, exc)
        return None


def clear_partial(entry: Path) -> None:
    """Remove what a killed writer of `entry` left behind: `atomic_write`'s temporary folders beside the entry and,
    for a folder entry, inside it. Only while holding the entry's lock."""
    leftovers = [*entry.parent.glob(f".{entry.name}.*"), *(entry.glob(".*") if entry.is_dir() else [])]
    for folder in leftovers:
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def entry_lock(entry: Path, wait_s: float) -> Iterator[float]:
    """Hold the lock of a cache entry while computing it; yields the seconds spent waiting for another job.

    `filelock.FileLock` is an flock: the kernel releases it when its holder dies, so a crashed job never blocks the
    others (where a filesystem has no flock, filelock falls back to a marker file whose holder, if it is on this
    host and no longer alive, is cleared). The wait is bounded by `wait_s`."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(f"{entry}.lock", timeout=wait_s)
    start = time.monotonic()
    try:
        lock.acquire()
    except Timeout:
        raise UserError(
            f"waited {wait_s:g} s for another job computing {entry} (lock {entry}.lock); "
            "raise limits.wait_s, or check that job"
        ) from None
    try:
        yield time.monotonic() - start
    finally:
        lock.release()
