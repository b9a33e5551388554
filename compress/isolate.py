"""Running one stage in a forked child process, under a memory and a time limit, so that a variant that exhausts
memory, hangs or crashes in native code becomes a failed row instead of the end of the sweep.

The child is a `fork` of the job process: it inherits the imported libraries and the loaded data set, so starting
it costs milliseconds. The job process itself stays on one torch thread (`torch_threads(1)` around its work): a
child forked from a process whose OpenMP pool was started would hang in its first parallel region; the child
computes on the job's `threads` (`torch_threads(cfg.threads)`). `torch_threads` is the one place pocketbench sets
torch's thread count.
The child reports which part of the stage it is in (`report_part`), so a failure names it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection

import torch

from compress.errors import StageError, UserError, first_line, trace_log

GRACE_S = 20  # seconds a stopped (or finished) child gets to exit before SIGKILL
OUT_OF_MEMORY = ("can't allocate memory", "cannot allocate memory", "std::bad_alloc", "out of memory")
_channel: Connection | None = None  # set in the child: where report_part() sends


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count for the block, the previous one after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Limits:
    """What one stage may use: memory (data segment, bytes; None = no limit) and seconds (None = no limit)."""

    memory_bytes: int | None
    time_s: float | None

    def memory_text(self) -> str:
        return f"{self.memory_bytes / 2**30:.3g} GB" if self.memory_bytes else "none"


def memory_limit_bytes(memory_gb: float | None, concurrent: int) -> int:
    """`limits.memory_gb`, or 80% of this machine's physical memory shared by the `concurrent` stages that may
    run at once when it is null."""
    if memory_gb is not None:
        return int(memory_gb * 2**30)
    return int(0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / concurrent)


def report_part(name: str) -> None:
    """Say which part of the stage runs now (a failure names it); a no-op outside an isolated child."""
    if _channel is not None:
        _channel.send(("part", name))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says the process ran out of memory (Python's MemoryError or an allocator's message)."""
    return isinstance(exc, MemoryError) or any(text in str(exc).lower() for text in OUT_OF_MEMORY)


def _native_output_to_job_log() -> None:
    """Native libraries write to file descriptor 2 themselves (ExecuTorch's cpuinfo and thread pool lines, torch's
    C++ warnings): in a stage's child it is the job's log file, so the terminal keeps the one-line messages."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:
            sys.stderr.flush()
            os.dup2(handler.stream.fileno(), 2)
            return


class Stopped(BaseException):
    """SIGTERM in a stage's child (its time limit passed): unwinds the stage so that its cleanup runs."""


def _stop(signum: int, frame: object) -> None:
    raise Stopped


def _child(work: Callable[[], None], limits: Limits, channel: Connection) -> None:
    global _channel
    _channel = channel
    signal.signal(signal.SIGTERM, _stop)
    _native_output_to_job_log()
    if limits.memory_bytes:
        resource.setrlimit(resource.RLIMIT_DATA, (limits.memory_bytes, limits.memory_bytes))
    try:
        work()
        channel.send(("ok", None))
    except BaseException as exc:  # noqa: BLE001 — everything goes back to the parent as one message
        kind = "oom" if is_out_of_memory(exc) else "user" if isinstance(exc, UserError) else "error"
        trace_log.debug("stage failed in its child process:\n%s", traceback.format_exc())
        channel.send((kind, (type(exc).__name__, str(exc))))


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def run_isolated(stage: str, work: Callable[[], None], limits: Limits, time_knob: str) -> None:
    """Run `work()` in a forked child under `limits`; its exception, or the limit it hit, is raised here as one
    line (a limit or a crash names the part of `stage` it happened in). `time_knob` is the config knob that sets
    the time limit. A child past its time limit gets SIGTERM first, so its cleanup runs (a phone session stops its
    run on the phone), and SIGKILL after GRACE_S."""
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=_child, args=(work, limits, sender), name=f"pocketbench-{stage}")
    child.start()
    sender.close()
    part, outcome, timed_out = stage, None, False
    deadline = None if limits.time_s is None else time.monotonic() + limits.time_s
    try:
        while outcome is None:
            left = None if deadline is None else max(deadline - time.monotonic(), 0)
            if not receiver.poll(left):
                timed_out = True
                break
            try:
                kind, value = receiver.recv()
            except EOFError:  # the child died without a word: killed by a signal or os._exit
                break
            part, outcome = (value, None) if kind == "part" else (part, (kind, value))
    finally:
        _end(child, stop=timed_out)
        receiver.close()
    if timed_out:
        raise StageError(f"took longer than the {limits.time_s:g} s limit ({time_knob}) in {part}")
    _raise_failure(outcome, child.exitcode, part, limits)


def _end(child: multiprocessing.Process, stop: bool) -> None:
    """Wait for the child to exit (stopping it first when `stop`), killing it after GRACE_S."""
    if stop:
        child.terminate()
    child.join(GRACE_S)
    if child.is_alive():
        child.kill()
        child.join()


def _raise_failure(outcome: tuple | None, exitcode: int | None, part: str, limits: Limits) -> None:
    """Turn what the child said (or how it died) into the exception of the stage; nothing when it succeeded."""
    if outcome is not None and outcome[0] == "ok":
        return
    if outcome is None:
        how = _signal_name(exitcode) if exitcode and exitcode < 0 else f"exit code {exitcode}"
        hint = "; out of memory? (the kernel kills with SIGKILL)" if exitcode == -signal.SIGKILL else ""
        raise StageError(f"crashed ({how}) in {part}{hint}")
    kind, (name, message) = outcome
    first = first_line(message)
    if kind == "oom":
        raise StageError(f"ran out of memory (limit {limits.memory_text()}, limits.memory_gb) in {part}: {first}")
    if kind == "user":
        raise UserError(message)
    raise StageError(f"{name}: {first}" if first else name)
