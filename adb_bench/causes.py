"""Why a program on the phone failed, as one line: pure functions of its exit code and output text.

These are the failures every benchmark binary shares: the shell could not start it (missing, wrong ABI,
noexec mount), Android's linker could not link it (CANNOT LINK EXECUTABLE), it died on an uncaught C++
exception (libstdc++ `what():` or libc++abi `terminating due to uncaught exception of type X: ...`) or on a
signal. A binary's own failures (its flags, its messages) live next to its runner.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence

LINK = re.compile(r'CANNOT LINK EXECUTABLE "([^"]*)": (.*)')
MISSING_LIB = re.compile(r'library "([^"]+)" not found')
LIBSTDCXX = re.compile(r"terminate called after throwing an instance of '([^']+)'\s*\n\s*what\(\):\s+(.*)")
LIBCXXABI = re.compile(r"terminating (?:due to|with) uncaught exception of type ([\w:<>]+): (.*)")
WRONG_ABI = re.compile(r"not executable: (?:\d+-bit ELF file|magic \w+)|exec format error|syntax error", re.I)
NOEXEC = re.compile(r"can't execute: Permission denied|Permission denied")
NOT_FOUND = re.compile(r"inaccessible or not found|No such file or directory|: not found")
# lines that never name a cause: C++ backtraces, c10 debug handles, shell prompts (`139|flame:/ $`)
NOISE = re.compile(r"^(frame #\d+:|Exception raised from |Debug info for handle|(\d+\|)?[\w.-]+:/\S* [$#](\s|$))")
LONGEST = 300


def clipped(line: str) -> str:
    return line if len(line) <= LONGEST else line[: LONGEST - 3] + "..."


def meaningful_lines(text: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Non-empty lines minus backtrace frames, debug handles, prompts and the given progress lines."""
    lines = (x.strip() for x in text.replace("\r", "").splitlines())
    return [x for x in lines if x and x not in skip and not NOISE.match(x)]


def last_line(text: str, default: str, skip: tuple[str, ...] = ()) -> str:
    """The last meaningful line of a program's output (clipped), or `default` when it printed none."""
    return clipped(next(iter(meaningful_lines(text, skip)[-1:]), default))


def uncaught_exception(text: str) -> tuple[str, str] | None:
    """(exception type, first line of its message) from either C++ runtime's terminate text, else None."""
    match = LIBSTDCXX.search(text) or LIBCXXABI.search(text)
    return (match[1], clipped(match[2].strip())) if match else None


def with_hint(message: str, hints: Sequence[tuple[re.Pattern, str]], said: str | None = None) -> str:
    """`message`, plus `; <what to do>` from the first hint whose pattern is found in `said` (default: the message);
    a hint may quote its pattern's groups ({0})."""
    for pattern, hint in hints:
        if match := pattern.search(message if said is None else said):
            return f"{message}; {hint.format(*match.groups())}"
    return message


def signal_name(code: int) -> str | None:
    """`Segmentation fault` for exit code 139 (128 + signal), None when the code is not a signal's."""
    if not 128 < code < 128 + 65:
        return None
    try:
        return signal.strsignal(code - 128) or f"signal {code - 128}"
    except ValueError:
        return f"signal {code - 128}"


def launch_failure(code: int, text: str, binary: str, remote_dir: str) -> str | None:
    """Why the shell or the linker could not start `binary` (its path on the phone); None when it started."""
    name = binary.rsplit("/", 1)[-1]
    link = LINK.search(text)
    if link:
        lib = MISSING_LIB.search(link[2])
        if lib:
            return (f"{name} needs {lib[1]}, which the phone does not have: add device.push_libs=[/path/to/{lib[1]}] "
                    f"(the one from the NDK that built it)")  # fmt: skip
        return f"{name} cannot be linked on this phone ({clipped(link[2])}): rebuild it for the phone's Android version"
    said = last_line(text, f"exit code {code}")
    if WRONG_ABI.search(text):
        return f"{name} is built for another CPU ({said}): rebuild it with ANDROID_ABI = the phone's device_abi"
    if code == 126 and NOEXEC.search(text):
        return f"{name} may not run from {remote_dir} ({said}): keep device.remote_dir under /data/local/tmp"
    if code == 127 or (code == 126 and NOT_FOUND.search(text)):
        return f"{name} is missing on the phone ({said}): rerun (it is pushed again) or check device.remote_dir"
    return None


def crash(code: int, text: str, name: str) -> str | None:
    """The uncaught C++ exception or the fatal signal `name` died of, None when neither."""
    exception = uncaught_exception(text)
    if exception:
        return f"{name} stopped on {exception[0]}: {exception[1]}"
    died = signal_name(code)
    return f"{name} crashed ({died}, exit {code})" if died else None
