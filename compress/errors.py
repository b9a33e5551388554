"""The exception type for mistakes a user can fix (its message is printed as one line), and the log that
takes tracebacks to the job's log file only."""

import logging

# Records of this logger reach the job log file but not the terminal (the console handler is at INFO).
trace_log = logging.getLogger("pocketbench.traceback")
trace_log.setLevel(logging.DEBUG)


class UserError(Exception):
    """A problem in the user's input or environment; the message says what to do."""
