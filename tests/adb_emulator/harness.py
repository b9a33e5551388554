"""Building blocks for the adb test fixtures: a private server, attached emulated phones, an AdbDevice on one."""

from __future__ import annotations

import shutil
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


@contextmanager
def attached_phone(server: AdbServer, root: Path, **options) -> Iterator[EmulatedPhone]:
    """An emulated phone, `adb connect`ed; disconnected and stopped afterwards."""
    phone = EmulatedPhone(root, **options).start()
    try:
        server.connect(phone.serial, "device" if options.get("authorized", True) else "unauthorized")
        yield phone
    finally:
        server.disconnect(phone.serial)
        phone.stop()


def adb_device(server: AdbServer, phone: EmulatedPhone, binary: Path | str | None, **settings) -> AdbDevice:
    """An AdbDevice on `phone` with short runs and quick retries; `settings` override."""
    options = {"serial": phone.serial, "server_port": server.port, "warmup": 1, "iters": 3, "retry_wait_s": 0.1}
    options |= {"lock_dir": str(phone.root.parent / "locks"), "timeout_s": 60}
    return AdbDevice(None if binary is None else str(binary), **(options | settings))
