"""The `shell:` (raw bytes, no exit code) and `shell,v2,...:` (framed stdout/stderr/exit) services."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Callable

from adb_emulator.streams import Stream

STDIN, STDOUT, STDERR, EXIT = 0, 1, 2, 3


def v2_packet(kind: int, data: bytes) -> bytes:
    """Shell protocol v2 packet: 1-byte id, 4-byte little-endian length, payload."""
    return bytes([kind]) + len(data).to_bytes(4, "little") + data


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def _pump(pipe, send: Callable[[bytes], None], first_output: Callable[[], None]) -> None:
    """Forward a pipe to the host; `first_output` runs once after the first chunk went out."""
    called = False
    while chunk := os.read(pipe.fileno(), 65536):
        try:
            send(chunk)
        except ConnectionError:
            break
        if not called:
            called = True
            first_output()


def _watch_host(stream: Stream, proc: subprocess.Popen) -> None:
    """Host input is ignored (stdin is /dev/null); the host closing the stream kills the command."""
    while stream.read() is not None:
        pass
    kill_group(proc)


def run_shell(stream: Stream, proc: subprocess.Popen, v2: bool, on_first_output: Callable[[], None]) -> None:
    """Stream a started command's output to the host, then (v2) its exit code, then CLSE."""
    stream.accept()
    threading.Thread(target=_watch_host, args=(stream, proc), daemon=True).start()

    def sender(kind: int) -> Callable[[bytes], None]:
        return (lambda chunk: stream.write(v2_packet(kind, chunk))) if v2 else stream.write

    pumps = [threading.Thread(target=_pump, args=(proc.stdout, sender(STDOUT), on_first_output), daemon=True)]
    if proc.stderr is not None:
        pumps.append(threading.Thread(target=_pump, args=(proc.stderr, sender(STDERR), lambda: None), daemon=True))
    for pump in pumps:
        pump.start()
    for pump in pumps:
        pump.join()
    code = proc.wait()
    code = 128 - code if code < 0 else code  # killed by a signal: 128 + signal number, like a shell
    try:
        if v2:
            stream.write(v2_packet(EXIT, bytes([code & 0xFF])))
    except ConnectionError:
        pass
    stream.close()
