"""The emulated phone's log: a buffer that stand-ins append entries to (`write`, like liblog), and the `logcat`
command over it: `-d` prints the buffer in logcat's default threadtime format, `-c` empties it, `TAG:LEVEL` specs
filter (`-s` silences every tag not named), `--pid=N` keeps one process's lines. The buffer is
$PHONE_ROOT/logcat.jsonl, one JSON entry per line.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

LEVELS = "VDIWEFS"  # verbose ... fatal, silent


def _buffer() -> Path:
    return Path(os.environ["PHONE_ROOT"]) / "logcat.jsonl"


def write(pid: int, level: str, tag: str, message: str) -> None:
    """Append one entry from process `pid` (its main thread) at `level` (V D I W E F)."""
    entry = {"time": time.time(), "pid": pid, "tid": pid, "level": level, "tag": tag, "message": message}
    with open(_buffer(), "a") as handle:
        handle.write(json.dumps(entry) + "\n")


def threadtime(entry: dict) -> list[str]:
    """`MM-DD HH:MM:SS.mmm  PID  TID L TAG     : message`, one line per line of the message."""
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(entry["time"])) + f".{int(entry['time'] % 1 * 1000):03d}"
    head = f"{stamp} {entry['pid']:5d} {entry['tid']:5d} {entry['level']} {entry['tag']:<8}: "
    return [head + line for line in entry["message"].split("\n")]


def shown(entry: dict, specs: dict[str, str], default: str, pid: int | None) -> bool:
    """Whether a filter spec (the tag's, else `*`'s, else the default level) and the pid let the entry through."""
    least = specs.get(entry["tag"], specs.get("*", default))
    return (pid is None or entry["pid"] == pid) and LEVELS.index(entry["level"]) >= LEVELS.index(least)


def main(argv: list[str]) -> int:
    clear = dump = silent = False
    pid, specs, args = None, {}, iter(argv)
    for arg in args:
        if arg in ("-c", "--clear", "-d", "-s"):
            clear, dump, silent = clear or arg in ("-c", "--clear"), dump or arg == "-d", silent or arg == "-s"
        elif arg.startswith("--pid"):
            pid = int(arg.partition("=")[2] or next(args))
        elif not arg.startswith("-"):
            tag, _, level = arg.partition(":")
            specs[tag] = (level or "V")[0].upper()
        else:
            print(f"emulated logcat: {arg} is not emulated (-c, -d, -s, --pid, TAG:LEVEL are)", file=sys.stderr)
            return 2
    if clear:
        _buffer().write_text("")
        return 0
    if not dump:
        print("emulated logcat: only -d (dump and exit) is emulated", file=sys.stderr)
        return 2
    entries = [json.loads(line) for line in _buffer().read_text().splitlines()] if _buffer().exists() else []
    lines = [line for e in entries if shown(e, specs, "S" if silent else "V", pid) for line in threadtime(e)]
    if entries:
        print("\n".join(["--------- beginning of main", *lines]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
