"""An emulated Android phone on loopback: the adb device protocol over a sandbox directory.

Shell commands run with /bin/sh in the sandbox; the device paths `/data/local/tmp` and
`/sys/class/power_supply` are rewritten to `<root>/...` in shell commands (every absolute sync path lands
under `<root>`). `getprop`, `dumpsys` and `logcat` are small scripts on the sandbox PATH; `dumpsys battery` prints
what `set_battery` wrote, the battery's sysfs files (current_now, voltage_now) hold what `set_power` wrote,
`logcat` shows what the stand-ins logged (adb_emulator/logcat.py); with a `zygote` (adb_emulator/zygote.py) the
benchmark stand-ins run models in forks of it. Python scripts there import adb_emulator (PYTHONPATH).
Fault injection: `drop_when` hangs up the whole connection when a matching command first prints something.
"""

from __future__ import annotations

import contextlib
import json
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
cat "$PHONE_ROOT/battery.txt"
"""
# dumpsys battery of an Android 14 phone (Pixel), with the fields newer releases added
BATTERY = """Current Battery Service state:
  AC powered: {ac}
  USB powered: {usb}
  Wireless powered: {wireless}
  Dock powered: false
  Max charging current: 500000
  Max charging voltage: 5000000
  Charge counter: 3841000
  status: {status}
  health: 2
  present: true
  level: 87
  scale: 100
  voltage: 4312
  temperature: {tenths}
  technology: Li-ion
  Charging state: 1
  Charging policy: 1
  Capacity level: 3
"""
LOGCAT = f"""#!{sys.executable}
import sys
from adb_emulator.logcat import main
sys.exit(main(sys.argv[1:]))
"""
DEVICE_PATHS = ("/data/local/tmp", "/sys/class/power_supply")
TESTS = str(Path(__file__).resolve().parents[1])  # where adb_emulator is imported from


class EmulatedPhone:
    """`start()` listens on 127.0.0.1; reach it with `adb connect` and `adb -s phone.serial`."""

    def __init__(self, root: Path, shell_v2: bool = True, authorized: bool = True, props: dict | None = None,
                 zygote: str | None = None):  # fmt: skip
        self.root, self.shell_v2, self.authorized, self.zygote = Path(root), shell_v2, authorized, zygote
        self.props = PROPS | (props or {})
        (self.root / "data/local/tmp").mkdir(parents=True, exist_ok=True)
        (self.root / "system/bin").mkdir(parents=True, exist_ok=True)
        for name, text in (("getprop", GETPROP), ("dumpsys", DUMPSYS), ("logcat", LOGCAT)):
            (self.root / "system/bin" / name).write_text(text)
            (self.root / "system/bin" / name).chmod(0o755)
        (self.root / "build.prop").write_text("".join(f"{k}={v}\n" for k, v in self.props.items()))
        self.set_battery(312)
        self.set_power(idle_current=450_000, load_current=1_450_000, voltage=4_000_000)
        self.commands: list[str] = []  # every shell command as received, for assertions
        self._drops: list[list] = []  # [substring, remaining count]
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._connections: list[Connection] = []
        self._procs: list[subprocess.Popen] = []

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self._listener.getsockname()[1]}"

    def set_battery(self, tenths: int, usb: bool = True, ac: bool = False, wireless: bool = False) -> None:
        """What `dumpsys battery` says: temperature in tenths of a degree, the powered flags (status follows)."""
        status = 2 if usb or ac or wireless else 3  # charging / discharging
        values = {"ac": ac, "usb": usb, "wireless": wireless}
        text = BATTERY.format(tenths=tenths, status=status, **{k: str(v).lower() for k, v in values.items()})
        (self.root / "battery.txt").write_text(text)

    def set_power(self, idle_current: int, load_current: int, voltage: int) -> None:
        """The battery's sysfs: current_now while idle and while the benchmark stand-in runs, voltage_now."""
        supply = self.root / "sys/class/power_supply/battery"
        supply.mkdir(parents=True, exist_ok=True)
        values = {"current_now": idle_current, "idle_current_now": idle_current, "load_current_now": load_current,
                  "voltage_now": voltage, "type": "Battery"}  # fmt: skip
        for name, value in values.items():
            (supply / name).write_text(f"{value}\n")

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
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(): no connection after stop
        self._listener.close()
        for conn in self._connections:
            conn.drop()
        for proc in self._procs:
            if proc.poll() is None:
                kill_group(proc)
                proc.wait()

    def _banner(self) -> bytes:
        features = "shell_v2,cmd,stat_v2,ls_v2,fixed_push_mkdir" if self.shell_v2 else ""
        props = f"ro.product.name=pb_emu;ro.product.model={self.props['ro.product.model']};ro.product.device=emu"
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
        local_command = command
        for path in DEVICE_PATHS:
            local_command = local_command.replace(path, str(self.root / path.lstrip("/")))
        env = {"PATH": f"{self.root}/system/bin:/usr/bin:/bin", "PHONE_ROOT": str(self.root), "LC_ALL": "C",
               "PYTHONPATH": TESTS}  # fmt: skip
        env |= {"PHONE_ZYGOTE": self.zygote} if self.zygote else {}
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


def _write_stand_in(path: Path, source: str, options: dict) -> Path:
    """The stand-in `source` (a file of adb_emulator) with its OPTIONS, as an executable run by this test's Python."""
    text = (Path(__file__).parent / source).read_text().replace('"@OPTIONS@"', repr(json.dumps(options)))
    path.write_text(f"#!{sys.executable}\n" + text)
    path.chmod(0o755)
    return path


def make_fake_binary(path: Path, max_bytecode: int = 99, dialect: str = "android", needs: list[str] = ()) -> Path:
    """Write the speed_benchmark_torch stand-in: reading bytecode up to `max_bytecode`, crashing in the `dialect`
    of its C++ runtime (android | host), linked against `needs`."""
    options = {"max_bytecode": max_bytecode, "dialect": dialect, "needs": list(needs)}
    return _write_stand_in(path, "fake_speed_benchmark.py", options)


def make_fake_executor_runner(path: Path, backends: list[str] = ("XnnpackBackend",), logging: bool = True,
                              performant_cores: int = 2, event_tracer: bool = False) -> Path:  # fmt: skip
    """Write the executor_runner stand-in: built with `backends` (-DEXECUTORCH_BUILD_XNNPACK=ON: XnnpackBackend),
    with its log on or off (-DEXECUTORCH_ENABLE_LOGGING), `performant_cores` big cores for --cpu_threads=-1, with or
    without the event tracer (-DEXECUTORCH_ENABLE_EVENT_TRACER: `--etdump_path`)."""
    options = {"backends": list(backends), "logging": logging, "performant_cores": performant_cores,
               "event_tracer": event_tracer}  # fmt: skip
    return _write_stand_in(path, "fake_executor_runner.py", options)


def make_fake_benchmark_model(path: Path) -> Path:
    """Write LiteRT's benchmark_model stand-in (runs the .tflite with ai_edge_litert's interpreter)."""
    return _write_stand_in(path, "fake_benchmark_model.py", {})
