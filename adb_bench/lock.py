"""One benchmark per phone at a time: a `filelock` lock file per serial; a pool takes whichever phone is free."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from adb_bench.errors import DeviceError

log = logging.getLogger(__name__)


def lock_path(lock_dir: str | Path | None, serial: str) -> Path:
    """`<lock_dir or /tmp/pocketbench-<uid>/phones>/<serial with unsafe characters replaced>.lock`: the default is
    the same for every job on this machine (not $TMPDIR, which SLURM makes private to a job)."""
    folder = Path(lock_dir) if lock_dir else Path("/tmp") / f"pocketbench-{os.getuid()}" / "phones"
    return folder / (re.sub(r"[^A-Za-z0-9._-]", "_", serial) + ".lock")


@contextmanager
def free_phone(lock_dir: str | Path | None, serials: Sequence[str], poll_s: float = 0.5) -> Iterator[str]:
    """Hold the lock of the first listed phone that is free and yield its serial; while all are busy, look
    again every `poll_s` seconds (other processes and threads benchmarking on them wait the same way)."""
    locks = {serial: FileLock(lock_path(lock_dir, serial), thread_local=False) for serial in serials}
    folder = lock_path(lock_dir, serials[0]).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DeviceError(
            f"cannot create the lock folder {str(folder)!r} ({exc.strerror}): set device.lock_dir"
        ) from None
    waiting = False
    while True:
        for serial, lock in locks.items():
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            try:
                yield serial
            finally:
                lock.release()
            return
        if not waiting:
            log.info("waiting for a free phone among %s", ", ".join(serials))
            waiting = True
        time.sleep(poll_s)
