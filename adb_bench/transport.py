"""`Adb`: the adb executable as a small API — devices, shell (exit code, stdout, stderr), push, reconnect.

Every shell argument is quoted for the device shell, and the exit code comes from a marker the command
line echoes last: without shell v2 adb returns 0 whatever ran, and even with shell v2 adb 1.0.41
returns 0 when the connection drops mid-command. A missing marker therefore means the connection was lost.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adb_bench.errors import CommandTimeout, DeviceError, TransientError

MARKER = "__pocketbench_exit="
TRANSIENT = ("device offline", "error: closed", "connection reset", "broken pipe", "protocol fault",
             "device still connecting", "no devices/emulators found", "not found")  # fmt: skip
INSTALL_HINT = "install it (Debian/Ubuntu: sudo apt-get install adb; else Android SDK platform-tools) or set device.adb"


@dataclass(frozen=True)
class ShellResult:
    code: int
    out: str
    err: str


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_adb(exe: str) -> str:
    found = shutil.which(os.path.expanduser(exe))
    if not found:
        raise DeviceError(f"adb not found ({exe!r}): {INSTALL_HINT}=/path/to/adb")
    return found


# what to do about each state `adb devices` can show (adb's ConnectionStateToString), keyed by its first word(s)
STATE_FIXES = {
    "unauthorized": "unlock it and accept the 'Allow USB debugging' prompt (no prompt? adb kill-server, replug)",
    "authorizing": "unlock it and accept the 'Allow USB debugging' prompt (no prompt? adb kill-server, replug)",
    "offline": "replug the cable or run adb reconnect",
    "connecting": "wait a few seconds; if it stays, replug the cable",
    "no permissions": "adb may not open the USB device: install udev rules (Debian/Ubuntu: sudo apt-get install "
    "android-sdk-platform-tools-common), be in the plugdev group, replug",
    "sideload": "it is in recovery (sideload): reboot it into Android with adb reboot",
    "recovery": "it is in recovery: reboot it into Android with adb reboot",
    "rescue": "it is in rescue mode: reboot it into Android with adb reboot",
    "bootloader": "it is in the bootloader: reboot it into Android with fastboot reboot",
    "host": "that entry is an adb host, not a phone: pick the phone's serial (adb devices)",
    "detached": "it is detached from adb: adb attach, or replug",
}
ATTRIBUTE = re.compile(r"^[a-z_]+:\S*$")  # `adb devices -l`: usb:1-1 product:x model:y device:z transport_id:N


@dataclass(frozen=True)
class Listed:
    """One line of `adb devices [-l]`: serial, state (may hold spaces: `no permissions (...)`), attributes."""

    serial: str
    state: str
    attributes: dict[str, str]


def parse_devices(text: str) -> list[Listed]:
    """`adb devices` / `adb devices -l` output → one Listed per device (daemon start lines are skipped)."""
    found = []
    for line in text.replace("\r", "").splitlines():
        if not line.strip() or line.startswith(("List of devices", "* ")):
            continue
        serial, *words = line.split()
        attributes = []
        while words and ATTRIBUTE.match(words[-1]):
            attributes.insert(0, words.pop())
        found.append(Listed(serial, " ".join(words), dict(a.split(":", 1) for a in attributes)))
    return found


def state_problem(serial: str, state: str) -> DeviceError | None:
    """None for a usable device (`device`), else the one-line error for the state it is in."""
    if state == "device":
        return None
    key = next((k for k in STATE_FIXES if state.startswith(k)), "")
    shown = state.split("; see [")[0]  # adb's help URL adds nothing to the line
    verb = "has" if key == "no permissions" else "is"
    return DeviceError(f"device {serial} {verb} {shown}: {STATE_FIXES.get(key, 'replug it or run adb reconnect')}")


def adb_failure(text: str, serial: str | None) -> DeviceError:
    """The error for adb's own complaint (not the remote command's)."""
    line = next((x.strip() for x in text.splitlines() if x.strip()), "adb failed without a message")
    low = line.lower()
    if "unauthorized" in low or "authorizing" in low:
        return state_problem(str(serial), "unauthorized")
    if "insufficient permissions" in low or "no permissions" in low:
        return state_problem(str(serial), "no permissions")
    if "cannot connect to daemon" in low or "failed to start daemon" in low:
        return DeviceError(f"cannot reach the adb server ({line}); check device.server_host/server_port")
    if "more than one device" in low:
        return DeviceError("several devices attached: set device.serial (python cli.py devices lists them)")
    if any(word in low for word in TRANSIENT):
        return TransientError(f"adb: {line}")
    return DeviceError(f"adb: {line}")


class Adb:
    """One phone through the adb client (`-s serial`, remote server via `-H/-P` or ADB_SERVER_SOCKET)."""

    def __init__(self, exe: str = "adb", serial: str | None = None, host: str | None = None,
                 port: int | None = None, timeout_s: float = 60.0):  # fmt: skip
        self.exe = find_adb(exe)
        self.serial = serial or os.environ.get("ANDROID_SERIAL") or None
        self.server = [*(["-H", host] if host else []), *(["-P", str(port)] if port else [])]
        self.timeout_s = timeout_s

    def run(self, *args: str, timeout: float | None = None, device: bool = True) -> subprocess.CompletedProcess:
        """`adb [server options] [-s serial] args`; adb's own failures raise DeviceError/TransientError."""
        cmd = [self.exe, *self.server, *(["-s", self.serial] if device and self.serial else []), *args]
        limit = timeout or self.timeout_s
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=limit,
                                  stdin=subprocess.DEVNULL)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise CommandTimeout(f"adb {args[0]} timed out after {limit:g}s") from exc
        if proc.returncode != 0 and args[0] != "shell":
            raise adb_failure(proc.stderr + proc.stdout, self.serial)
        return proc

    def devices(self) -> list[tuple[str, str]]:
        """(serial, state) of every device the adb server knows: device, unauthorized, offline, ..."""
        return [(d.serial, d.state) for d in parse_devices(self.run("devices", device=False).stdout)]

    def shell(self, argv: Sequence[str], timeout: float | None = None) -> ShellResult:
        """Run argv on the device (each argument quoted); the exit code comes from the echoed marker."""
        line = " ".join(shlex.quote(str(a)) for a in argv) + f"; echo {MARKER}$?"
        proc = self.run("shell", line, timeout=timeout)
        where = proc.stdout.rfind(MARKER)
        if where < 0:
            if proc.returncode != 0 and (proc.stderr + proc.stdout).strip():
                raise adb_failure(proc.stderr.strip() or proc.stdout, self.serial)
            raise TransientError(f"connection to {self.serial} lost while running {shlex.quote(str(argv[0]))}")
        code = proc.stdout[where + len(MARKER) :].strip()
        return ShellResult(int(code) if code.isdigit() else 255, proc.stdout[:where], proc.stderr)

    def check(self, argv: Sequence[str], timeout: float | None = None) -> str:
        """stdout of a command that must succeed."""
        result = self.shell(argv, timeout)
        if result.code != 0:
            lines = (result.err or result.out).strip().splitlines() or [f"exit code {result.code}"]
            raise DeviceError(f"{shlex.join(map(str, argv))} failed on the device: {lines[-1]}")
        return result.out

    def remote_sha256(self, remote: str) -> str | None:
        """sha256 of a device file; None when it does not exist."""
        result = self.shell(["sha256sum", remote])
        return result.out.split()[0] if result.code == 0 and result.out.strip() else None

    def push(self, local: Path, remote: str, timeout: float | None = None) -> None:
        """`adb push`, then the device file's checksum must equal the local one."""
        self.run("push", str(local), remote, timeout=timeout)
        if self.remote_sha256(remote) != sha256_of(local):
            raise TransientError(f"push of {local.name} to {remote} did not arrive intact (checksum differs)")

    def pull(self, remote: str, local: Path, timeout: float | None = None) -> None:
        """`adb pull` of one device file to a local path."""
        self.run("pull", remote, str(local), timeout=timeout)

    def select(self) -> str:
        """The serial to use: the configured one (attached and authorized) or the only attached device."""
        found = dict(self.devices())
        if self.serial is None:
            if not found:
                raise DeviceError("no device attached: plug the phone in with USB debugging enabled, then adb devices")
            if len(found) > 1:
                raise DeviceError(f"several devices attached ({', '.join(found)}): pick one with device.serial=SERIAL")
            self.serial = next(iter(found))
        if ":" in self.serial and found.get(self.serial) in (None, "offline"):  # a network device: (re)connect
            self.reconnect() if self.serial in found else self.run("connect", self.serial, device=False)
            found = dict(self.devices())
        state = found.get(self.serial)
        if state is None:
            raise DeviceError(f"device {self.serial} is not attached (attached: {', '.join(found) or 'none'})")
        if problem := state_problem(self.serial, state):
            raise problem
        return self.serial

    def reconnect(self) -> None:
        """After a dropped connection: reconnect a network (host:port) device, then wait (bounded) for it."""
        try:
            if self.serial and ":" in self.serial:
                self.run("disconnect", self.serial, device=False)
                self.run("connect", self.serial, device=False)
            self.run("wait-for-device", timeout=min(self.timeout_s, 30))
        except DeviceError:
            pass  # the next attempt reports what is wrong
