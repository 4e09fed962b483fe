"""The terminal the commands print to: one rich Console setting, how byte sizes read, stdout failures as exit
statuses, and the signals that stop a command as a Ctrl-C.

A command's stdout can go away under it (``hpc-ft report RUN | head -1``) or fill up (``hpc-ft status > /dev/full``).
Python answers both with a traceback, and once more at exit when it flushes stdout; rich's Console exits with
status 1 on a closed pipe, the same status as a failed job. Here both become what a shell tool says: 141 (128 +
SIGPIPE) for a reader that went away, 1 and one line on stderr for a write error (a full disk).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
from typing import Iterator

EXIT_CLOSED_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a command whose reader went away
EXIT_WRITE_ERROR = 1  # as coreutils' tools exit after "write error"


def console():
    """A rich Console for stdout: no highlighting; where stdout is not a terminal (job logs, pipes, files), 120
    columns, or more where ``COLUMNS`` asks for more (rich would squeeze tables into 80). A closed pipe raises BrokenPipeError (rich would
    exit with status 1), which :func:`closed_pipe` turns into a quiet exit."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True  # nothing more to write
            raise BrokenPipeError

    return _Console(highlight=False, width=None if sys.stdout.isatty() else _columns(default=120))


def fmt_bytes(n: int | float) -> str:
    """``n`` bytes as GiB with two decimals, MiB with one below 1 GiB (a 2.5 MB peak reads ``2.5 MiB``, not
    ``0.00 GiB``), KiB with one below 1 MiB (a tiny model's 40 KB peak reads ``39.1 KiB``, not ``0.0 MiB``) and
    whole bytes below 1 KiB: the one byte formatter of the estimate, the plan and the run report. Zero stays
    ``0.0 MiB`` (a part with nothing in it, e.g. no optimizer state at a forward-pass peak)."""
    kib = 1024
    size = abs(n)
    if size >= kib ** 3:
        return f"{n / kib ** 3:.2f} GiB"
    if size >= kib ** 2 or size == 0:
        return f"{n / kib ** 2:.1f} MiB"
    if size >= kib:
        return f"{n / kib:.1f} KiB"
    return f"{n:.0f} B"


def _columns(default: int) -> int:
    """``COLUMNS`` when it asks for more than ``default`` (``COLUMNS=250 hpc-ft report SWEEP > file``), else
    ``default``: output that goes to a file, a log or a parser is not wrapped narrower (an inherited COLUMNS=80 would
    split run dirs and commands meant to be pasted across lines)."""
    try:
        value = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        return default
    return max(value, default)


def closed_pipe() -> int:
    """Stop quietly once stdout's reader has gone, as cat does: stdout is pointed at /dev/null so that Python's flush
    at exit does not fail too. Returns :data:`EXIT_CLOSED_PIPE`."""
    _stdout_to_devnull()
    return EXIT_CLOSED_PIPE


# A full disk, a quota, a failing device: the output (or a file the command writes) cannot be written.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def is_write_error(exc: OSError) -> bool:
    """Whether ``exc`` says data could not be written for want of space or a working device, whoever was writing
    (stdout redirected to a full disk, or a record in the run dir), as opposed to a path or permission error."""
    return exc.errno in WRITE_ERRNOS


def write_error(exc: OSError) -> int:
    """One line on stderr for data that could not be written (``hpc-ft status > /dev/full``), as coreutils' tools
    say it; stdout is pointed at /dev/null so Python's flush at exit does not print a second error. Returns
    :data:`EXIT_WRITE_ERROR`."""
    _stdout_to_devnull()
    where = f": {exc.filename}" if exc.filename else ""
    print(f"hpc-ft: write error{where}: {exc.strerror or exc}", file=sys.stderr)
    return EXIT_WRITE_ERROR


def _stdout_to_devnull() -> None:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised where Ctrl-C's KeyboardInterrupt would be; ``signum`` says which."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def stop_signals_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill PID``, a job's time limit) and SIGHUP (the terminal or ssh session closed)
    raise :class:`Stopped`, a KeyboardInterrupt, so the cleanup a Ctrl-C runs (``finally:`` blocks, e.g. the tune
    driver cancelling array tasks it will never release) runs for them too; Python's default would end the process
    at once. The earlier handlers come back after the block. Main thread only (as Python's signal handlers)."""

    def stop(signum, frame):
        raise Stopped(signum)

    stops = (signal.SIGTERM, signal.SIGHUP)
    before = {s: signal.signal(s, stop) for s in stops}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def interrupted_exit_status(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended: 130 for Ctrl-C, 143 for SIGTERM,
    129 for SIGHUP."""
    return 128 + getattr(exc, "signum", signal.SIGINT)
