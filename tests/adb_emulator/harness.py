"""Building blocks for the adb test fixtures: a private server, attached emulated phones (sharing one zygote),
an AdbDevice on one."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from adb_bench.adb import AdbDevice
from adb_emulator.phone import EmulatedPhone
from adb_emulator.server import AdbServer


@contextmanager
def private_adb_server(home: Path) -> Iterator[AdbServer]:
    """The real adb client's server on a free port (skip when adb is not installed); killed by port after."""
    if shutil.which("adb") is None:
        pytest.skip("adb is not installed (apt-get install adb)")
    server = AdbServer(home).start()
    try:
        yield server
    finally:
        server.stop()


@functools.cache
def zygote() -> str:
    """The socket of this test process's zygote (adb_emulator/zygote.py), started on first use and ended with
    the process (its stdin closes)."""
    path = os.path.join(tempfile.mkdtemp(prefix="pb-zygote-"), "socket")
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])
    }
    process = subprocess.Popen([sys.executable, "-m", "adb_emulator.zygote", path], stdin=subprocess.PIPE, env=env)
    atexit.register(process.wait, 10)
    atexit.register(process.stdin.close)
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the zygote did not start (exit code {process.poll()})")
        time.sleep(0.05)
    return path


@contextmanager
def attached_phone(server: AdbServer, root: Path, **options) -> Iterator[EmulatedPhone]:
    """An emulated phone, `adb connect`ed; disconnected and stopped afterwards. Its runs fork the shared zygote
    unless `zygote=None`: then each stand-in loads torch and runs the file in its own process, so its
    /proc/PID/status holds the file's memory (with the zygote, the work is in the zygote's fork)."""
    if "zygote" not in options:
        options["zygote"] = zygote()
    phone = EmulatedPhone(root, **options).start()
    try:
        server.connect(phone.serial, "device" if options.get("authorized", True) else "unauthorized")
        yield phone
    finally:
        server.disconnect(phone.serial)
        phone.stop()


def adb_device(server: AdbServer, phone: EmulatedPhone, binary: Path | str | None, **settings) -> AdbDevice:
    """An AdbDevice on `phone` with short runs (one round), a short idle baseline and quick retries; `settings`
    override (e.g. `serial=[a.serial, b.serial]` for a pool)."""
    options = {"serial": phone.serial, "server_port": server.port, "warmup": 1, "iters": 3, "rounds": 1}
    options |= {"lock_dir": str(phone.root.parent / "locks"), "timeout_s": 60, "retry_wait_s": 0.1}
    options |= {"energy": {"idle_s": 0.3, "interval_s": 0.05}}
    return AdbDevice(None if binary is None else str(binary), **(options | settings))
