"""One benchmark per phone at a time: an exclusive fcntl lock file per device serial."""

from __future__ import annotations

import fcntl
import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


def lock_path(lock_dir: str | Path | None, serial: str) -> Path:
    """`<lock_dir or $TMPDIR/pocketbench-locks>/<serial with unsafe characters replaced>.lock`."""
    folder = Path(lock_dir) if lock_dir else Path(tempfile.gettempdir()) / "pocketbench-locks"
    return folder / (re.sub(r"[^A-Za-z0-9._-]", "_", serial) + ".lock")


@contextmanager
def device_lock(lock_dir: str | Path | None, serial: str) -> Iterator[None]:
    """Hold the phone's lock; another process or thread benchmarking the same serial waits here."""
    path = lock_path(lock_dir, serial)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another benchmark on %s (lock %s)", serial, path)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
