"""A private adb server (its own port, its own key dir) for the tests; killed by port at the end."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AdbServer:
    """`server("devices")` runs the real adb client against this server; `connect(phone)` attaches a phone."""

    def __init__(self, home: Path):
        self.exe = shutil.which("adb") or "adb"
        self.port = free_port()
        self.env = os.environ | {"HOME": str(home), "ANDROID_SDK_HOME": str(home)}
        for name in ("ANDROID_SERIAL", "ADB_SERVER_SOCKET", "ANDROID_ADB_SERVER_PORT"):
            self.env.pop(name, None)
        self.env["ANDROID_ADB_SERVER_PORT"] = str(self.port)

    def __call__(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        cmd = [self.exe, "-P", str(self.port), *args]
        return subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )

    def start(self) -> AdbServer:
        self("start-server")
        return self

    def connect(self, serial: str, state: str = "device") -> None:
        """`adb connect` and wait (≤10 s) until the device shows `state` in `adb devices`."""
        self("connect", serial)
        deadline = time.monotonic() + 10
        while f"{serial}\t{state}" not in self("devices").stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{serial} never became {state}: {self('devices').stdout!r}")
            time.sleep(0.05)

    def disconnect(self, serial: str) -> None:
        self("disconnect", serial)

    def stop(self) -> None:
        self("kill-server")
