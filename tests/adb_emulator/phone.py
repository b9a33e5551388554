"""An emulated Android phone on loopback: the adb device protocol over a sandbox directory.

Shell commands run with /bin/sh in the sandbox; the device path `/data/local/tmp` is rewritten to
`<root>/data/local/tmp` (in shell commands and sync paths), every other absolute sync path lands under
`<root>`. `getprop` and `dumpsys` are small scripts on the sandbox PATH. Fault injection: `drop_when`
hangs up the whole connection when a matching command first prints something.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from pathlib import Path

from adb_emulator.shell import kill_group, run_shell
from adb_emulator.streams import Connection, Stream
from adb_emulator.sync import run_sync
from adb_emulator.wire import CLSE

PROPS = {
    "ro.product.model": "Pixel Emu",
    "ro.product.manufacturer": "Emulated",
    "ro.board.platform": "emu8450",
    "ro.soc.model": "EMU8450",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.build.fingerprint": "emu/pb/emu:14/UP1A/1:user/release-keys",
}
GETPROP = """#!/bin/sh
if [ $# -eq 0 ]; then sed 's/^\\([^=]*\\)=\\(.*\\)$/[\\1]: [\\2]/' "$PHONE_ROOT/build.prop"
else grep "^$1=" "$PHONE_ROOT/build.prop" | cut -d= -f2-; fi
"""
DUMPSYS = """#!/bin/sh
[ "$1" = battery ] || { echo "Can't find service: $1"; exit 1; }
printf 'Current Battery Service state:\\n  AC powered: false\\n  USB powered: true\\n  level: 87\\n'
printf '  temperature: %s\\n  technology: Li-ion\\n' "$(cat "$PHONE_ROOT/battery_temperature")"
"""
DEVICE_TMP = "/data/local/tmp"


class EmulatedPhone:
    """`start()` listens on 127.0.0.1; reach it with `adb connect` and `adb -s phone.serial`."""

    def __init__(self, root: Path, shell_v2: bool = True, authorized: bool = True):
        self.root, self.shell_v2, self.authorized = Path(root), shell_v2, authorized
        (self.root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
        (self.root / "system/bin").mkdir(parents=True, exist_ok=True)
        for name, text in (("getprop", GETPROP), ("dumpsys", DUMPSYS)):
            (self.root / "system/bin" / name).write_text(text)
            (self.root / "system/bin" / name).chmod(0o755)
        (self.root / "build.prop").write_text("".join(f"{k}={v}\n" for k, v in PROPS.items()))
        self.set_battery_tenths(312)
        self.commands: list[str] = []  # every shell command as received, for assertions
        self._drops: list[list] = []  # [substring, remaining count]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._connections: list[Connection] = []
        self._procs: list[subprocess.Popen] = []

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def set_battery_tenths(self, value: int) -> None:
        (self.root / "battery_temperature").write_text(f"{value}\n")

    def drop_when(self, substring: str, times: int) -> None:
        """Hang up the connection the next `times` times a command containing `substring` prints output."""
        self._drops.append([substring, times])

    def local(self, device_path: str) -> Path:
        """Where a device path lives in the sandbox."""
        return self.root / device_path.lstrip("/")

    def start(self) -> EmulatedPhone:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._listener.close()
        for conn in self._connections:
            conn.drop()
        for proc in self._procs:
            if proc.poll() is None:
                kill_group(proc)
                proc.wait()

    def _banner(self) -> bytes:
        features = "shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir" if self.shell_v2 else ""
        props = f"ro.product.name=pb_emu;ro.product.model={PROPS['ro.product.model']};ro.product.device=emu"
        return f"device::{props};features={features}\0".encode()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            conn = Connection(sock, self._banner(), self._service, refuse_auth=not self.authorized)
            self._connections.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def _service(self, stream: Stream, destination: str) -> None:
        service, _, command = destination.partition(":")
        options = service.split(",")[1:]
        if service == "sync" and not command:
            run_sync(stream, self.local)
        elif service.startswith("shell") and command and ("v2" not in options or self.shell_v2):
            self.commands.append(command)
            proc = self._spawn(command, merge_stderr="v2" not in options)
            run_shell(stream, proc, "v2" in options, lambda: self._maybe_drop(stream, command, proc))
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
        else:
            stream.conn.send(CLSE, 0, stream.remote_id)  # OPEN refused

    def _spawn(self, command: str, merge_stderr: bool) -> subprocess.Popen:
        local_command = command.replace(DEVICE_TMP, str(self.root / DEVICE_TMP.lstrip("/")))
        env = {"PATH": f"{self.root}/system/bin:/usr/bin:/bin", "PHONE_ROOT": str(self.root), "LC_ALL": "C"}
        proc = subprocess.Popen(
            ["/bin/sh", "-c", local_command], cwd=self.root, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self._procs.append(proc)
        return proc

    def _maybe_drop(self, stream: Stream, command: str, proc: subprocess.Popen) -> None:
        for rule in self._drops:
            if rule[0] in command and rule[1] > 0:
                rule[1] -= 1
                kill_group(proc)
                stream.conn.drop()
                return


def make_fake_binary(path: Path, max_bytecode: int = 99) -> Path:
    """Write the speed_benchmark_torch stand-in as an executable run by this test's Python."""
    source = (Path(__file__).parent / "fake_speed_benchmark.py").read_text()
    path.write_text(f"#!{sys.executable}\n" + source.replace("@MAX_BYTECODE@", str(max_bytecode)))
    path.chmod(0o755)
    return path
