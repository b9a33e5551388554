"""The exceptions a row's `error` comes from (a mistake the user can fix; a stage that failed in its child), the one
place that turns an exception into that one line, and the log that takes tracebacks to the job's log file only."""

import logging

# Records of this logger reach the job log file but not the terminal (the console handler is at INFO).
trace_log = logging.getLogger("pocketbench.traceback")
trace_log.setLevel(logging.DEBUG)


class UserError(Exception):
    """A problem in the user's input or environment; the message says what to do."""


class StageError(Exception):
    """A stage failed in its child process; the message is the row's whole `error` (the cause, and for a limit or a
    crash the part of the stage it happened in)."""


def first_line(text: object) -> str:
    """The first non-blank line of a message (an exception's, a program's output), stripped; "" for none."""
    return next((line.strip() for line in str(text).splitlines() if line.strip()), "")


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message` — what the `error` column holds (a StageError's message already is)."""
    first = first_line(exc)
    if isinstance(exc, StageError):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def cannot(model: object, what: str, exc: BaseException, fix: str) -> UserError:
    """The one line for a model a library could not capture or trace: `<Model> cannot be <what> (<the library's
    first line>); <fix>`."""
    cause = (first_line(exc) or type(exc).__name__)[:200]
    return UserError(f"{type(model).__name__} cannot be {what} ({cause}); {fix}")
