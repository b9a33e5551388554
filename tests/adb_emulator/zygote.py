"""A process that imports torch, ExecuTorch's runtime and LiteRT's interpreter once and forks one child per run of a
benchmark stand-in (like Android's zygote), so an emulated run costs a fork instead of seconds of imports.

The stand-in (fast to start: no torch) calls `run_in_zygote`: it connects to $PHONE_ZYGOTE, sends its stdout/stderr
file descriptors, its environment, working directory and the work (`run_here(*args)` of its own script); the
child writes straight to those descriptors and ends as the real binary would (exit code, abort, segfault). The
zygote answers with the child's exit code (negative: the signal that killed it); the stand-in then ends the same
way, so the shell sees what it would see. A stand-in killed meanwhile (a timeout) takes its child with it.
`python -m adb_emulator.zygote SOCKET` serves until its stdin closes (the test process ended).
"""

from __future__ import annotations

import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import traceback


def _child(listener: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the stand-in's process (stdio, env, cwd) and run its work; never returns."""
    listener.close()
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    for fd in fds:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.stdout.reconfigure(line_buffering=True)
    code = 1
    try:
        runpy.run_path(request["script"], run_name="zygote_child")["run_here"](*request["args"])
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # noqa: BLE001 — a bug in a stand-in: shown, and the fork never returns to serve()
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _report(conn: socket.socket, pid: int) -> None:
    """Wait for the child and send its exit code; kill it when the stand-in hangs up first."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            conn.sendall(str(os.waitstatus_to_exitcode(status)).encode())
            conn.close()
            return
        readable, _, _ = select.select([conn], [], [], 0.05)
        if readable and not conn.recv(1):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            conn.close()
            return


def _exit_with_parent() -> None:
    sys.stdin.read()
    os._exit(0)


def run_in_zygote(path: str, script: str, args: list) -> None:
    """In a stand-in: `run_here(*args)` of `script` in a fork of the zygote at `path`, writing to this process's
    stdout/stderr; then end the way that fork ended (its exit code, or the signal that killed it)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        request = {"script": script, "args": args, "env": dict(os.environ), "cwd": os.getcwd()}
        socket.send_fds(sock, [json.dumps(request).encode()], [1, 2])
        code = int(sock.recv(32) or b"1")
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    if code:
        sys.exit(code)


def serve(path: str) -> None:
    # imported once here, inherited by every forked run (importing starts no thread; nothing runs a program here)
    import executorch.exir._serialize._program  # noqa: F401
    import executorch.runtime  # noqa: F401
    import torch  # noqa: F401
    from ai_edge_litert import interpreter  # noqa: F401
    from executorch.extension.pybindings import portable_lib  # noqa: F401

    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)  # the socket appears when it is ready
    threading.Thread(target=_exit_with_parent, daemon=True).start()
    while True:
        conn, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 2)
        request = json.loads(message)
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            _child(listener, request, fds)
        for fd in fds:
            os.close(fd)
        threading.Thread(target=_report, args=(conn, pid), daemon=True).start()


if __name__ == "__main__":
    serve(sys.argv[1])
