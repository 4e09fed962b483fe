"""A failed node's error tail: the error of the worker that failed first, not the last lines of torchrun's output.

torchrun (started with ``--tee=3`` and the line prefix ``[rank${rank}]: ``, hpc_ft.node.launch) prints every
worker's line with its global rank in front, then, when a worker fails, its closing summary: "Failures:" (the
ranks stopped after it, or failed too) and "Root Cause (first observed failure):", one block per rank::

    [0]:
      time      : 2026-12-02_05:58:15
      host      : localhost
      rank      : 1 (local_rank: 1)
      exitcode  : 1 (pid: 11565)
      error_file: <N/A>
      traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html

A worker whose entry point is wrapped in torch.distributed.elastic's ``@record`` (hpc_ft's own loop) leaves an
error file, and its block's ``traceback`` field holds the Python traceback (continuation lines indented by two
spaces). A plain script leaves none: its traceback is found among its own ``[rankN]:`` lines instead.

The root cause is torchrun's, except where it is a follow-on error of a collective (gloo's "Connection closed by
peer", NCCL's aborted communicator): torchrun orders failures by their error file's timestamp, in whole seconds,
so a peer that died of the real error in the same second can come first; then the first rank with an error of
its own is shown.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

# torchrun's prefix of each worker line (TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE, set by hpc_ft.node.launch), the
# same as torch.distributed's own excepthook writes once a process group exists.
LINE_PREFIX_TEMPLATE = "[rank${rank}]: "
_PREFIX = re.compile(r"^\[rank(\d+)\]: ?")
_DOUBLE_PREFIX = re.compile(r"^(\[rank(\d+)\]: )\[rank\2\]: ?")
TRACEBACK_HEAD = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
# The last line of a worker's error that only says a peer died first (gloo, NCCL): a follow-on, not a cause.
FOLLOW_ON_ERRORS = ("Connection closed by peer", "Connection reset by peer", "remote process exited",
                    "communicator was aborted", "NCCL communicator was aborted")
ROOT_CAUSE_HEAD = "Root Cause (first observed failure):"
FAILURES_HEAD = "Failures:"
_BLOCK_HEAD = re.compile(r"^\[\d+\]:\s*$")
_BORDER = re.compile(r"^(-{10,}|={10,})\s*$")
_FIELD = re.compile(r"^  (time|host|rank|exitcode|error_file|traceback)\s*: ?(.*)$")
_NO_TRACEBACK = ("To enable traceback see", "Signal ", "<N/A>")

PER_RANK_LINES = 200  # each worker's last lines kept in memory while torchrun runs
AGENT_LINES = 400  # torchrun's own last lines (its summary ends them)
TAIL_LINES = 30  # lines of the chosen traceback in the report (its first line, "...", then the last ones)


def collapse_prefix(line: str) -> str:
    """``[rank0]: [rank0]: x`` -> ``[rank0]: x``: torchrun's prefix in front of the one torch.distributed's
    excepthook writes itself (once ``init_process_group`` ran) is said once."""
    return _DOUBLE_PREFIX.sub(r"\1", line)


def split_rank(line: str) -> tuple[int | None, str]:
    """The global rank of a worker's line and the line without its prefix; (None, line) for torchrun's own."""
    m = _PREFIX.match(line)
    if m is None:
        return None, line
    return int(m.group(1)), line[m.end():]


@dataclass
class Failure:
    """One rank's block of torchrun's closing summary."""

    rank: int
    exitcode: int | None = None
    error_file: str | None = None  # None: torchrun had none (<N/A>: the worker was not wrapped in @record)
    traceback: list[str] = field(default_factory=list)  # from the error file; [] without one


def parse_summary(lines: list[str]) -> list[Failure]:
    """The failures of torchrun's last closing summary in ``lines`` (its own lines, no rank prefix), the root
    cause first; [] when there is none (torchrun was stopped by a signal, or it never started workers)."""
    heads = [i for i, ln in enumerate(lines) if ln.strip() == FAILURES_HEAD]
    if not heads:
        return []
    root: list[Failure] = []
    others: list[Failure] = []
    target = others
    current: Failure | None = None
    in_traceback = False
    for ln in lines[heads[-1] + 1:]:
        text = ln.rstrip("\n")
        if text.strip() == ROOT_CAUSE_HEAD:
            target, current, in_traceback = root, None, False
            continue
        if _BORDER.match(text) or _BLOCK_HEAD.match(text):
            current, in_traceback = None, False
            if _BLOCK_HEAD.match(text):
                current = Failure(rank=-1)
                target.append(current)
            continue
        if current is None:
            continue
        m = _FIELD.match(text)
        if m and not in_traceback:
            _set_field(current, m.group(1), m.group(2))
            in_traceback = m.group(1) == "traceback"
        elif in_traceback:  # the traceback's next line: torchrun indented it by two spaces
            current.traceback.append(text[2:] if text.startswith("  ") else text)
    found = [f for f in root + others if f.rank >= 0]
    for f in found:
        while f.traceback and not f.traceback[-1].strip():
            f.traceback.pop()
        if f.traceback and f.traceback[0].startswith(_NO_TRACEBACK):
            f.traceback = []
    return found


def _set_field(f: Failure, key: str, value: str) -> None:
    if key == "rank":
        m = re.match(r"(\d+)", value)
        f.rank = int(m.group(1)) if m else -1
    elif key == "exitcode":
        m = re.match(r"(-?\d+)", value)
        f.exitcode = int(m.group(1)) if m else None
    elif key == "error_file":
        f.error_file = None if value.strip() in ("", "<N/A>") else value.strip()
    elif key == "traceback":
        f.traceback = [value]


def last_traceback(lines: list[str]) -> list[str]:
    """The last Python traceback in ``lines`` (with the tracebacks chained before it), to its end; [] without
    one."""
    starts = [i for i, ln in enumerate(lines) if ln.strip() == TRACEBACK_HEAD]
    if not starts:
        return []
    k = len(starts) - 1
    # "During handling of the above exception ..." joins a traceback to the one before it.
    while k > 0 and any(ln.startswith(_CHAINED) for ln in lines[starts[k - 1]:starts[k]]):
        k -= 1
    out = lines[starts[k]:]
    while out and not out[-1].strip():
        out.pop()
    return out


def is_follow_on(error: list[str]) -> bool:
    """The error's last line says a peer died first (a collective's broken connection), not why."""
    last = next((ln for ln in reversed(error) if ln.strip()), "")
    return any(p in last for p in FOLLOW_ON_ERRORS)


def bounded(lines: list[str], limit: int = TAIL_LINES) -> list[str]:
    """At most ``limit`` lines: the first (a traceback's head), "...", then the last ones."""
    if len(lines) <= limit:
        return lines
    return [lines[0], "  ..."] + lines[-(limit - 2):]


class WorkerOutput:
    """torchrun's output as it streams: each worker's last lines (by the rank of its prefix) and torchrun's own,
    bounded, for the error tail of a failed node."""

    def __init__(self, per_rank: int = PER_RANK_LINES, agent: int = AGENT_LINES) -> None:
        self._per_rank = per_rank
        self.ranks: dict[int, collections.deque[str]] = {}
        self.order: list[int] = []  # ranks in the order they first wrote a traceback (about when they failed)
        self.agent: collections.deque[str] = collections.deque(maxlen=agent)

    def add(self, line: str) -> str:
        """Keep one line of torchrun's output; returns it with its rank prefix said once (``collapse_prefix``, its
        newline kept): what the node's log and stdout get."""
        line = collapse_prefix(line)
        rank, text = split_rank(line.rstrip("\n"))
        if rank is None:
            self.agent.append(text)
        else:
            self.ranks.setdefault(rank, collections.deque(maxlen=self._per_rank)).append(text)
            if text.strip() == TRACEBACK_HEAD and rank not in self.order:
                self.order.append(rank)
        return line

    def error_of(self, rank: int, failure: Failure | None = None) -> list[str]:
        """Rank ``rank``'s error: the traceback of its error file, else the last one it printed, else its last
        lines (an error it reported without a traceback, e.g. hpc_ft's refusal of a job)."""
        if failure is not None and failure.traceback:
            return failure.traceback
        own = list(self.ranks.get(rank, ()))
        return last_traceback(own) or own[-TAIL_LINES:]

    def error_tail(self) -> str:
        """The first failed worker's error, under one line naming it; without workers' errors, the end of
        torchrun's own output (its traceback when it has one). "" when there was no output at all."""
        failures = parse_summary(list(self.agent))
        if failures:
            found = self._root_cause(failures)
            if found is not None:
                cause, error = found
                root = failures[0]
                how = ("torchrun's first observed failure" if cause is root else
                       f"torchrun named rank {root.rank} first, "
                       + ("whose error is a follow-on of this one" if self.error_of(root.rank, root) else
                          "which printed no error"))
                head = f"rank {cause.rank} failed (exit code {cause.exitcode}; {how}):"
                return "\n".join([head, *bounded(error)]) + "\n"
        for rank in self.order:  # no summary (torchrun was stopped): the first traceback that is not a follow-on
            error = self.error_of(rank)
            if not is_follow_on(error):
                return "\n".join([f"rank {rank} failed:", *bounded(error)]) + "\n"
        agent = list(self.agent)
        own = last_traceback(agent) or agent[-TAIL_LINES:]
        return "".join(ln + "\n" for ln in bounded(own)) if own else ""

    def _root_cause(self, failures: list[Failure]) -> tuple[Failure, list[str]] | None:
        """The failed rank to show and its error: torchrun's root cause, unless its error is a follow-on (or it
        printed none: ranks that fail alike in the same second tie) and another failed rank has an error of its
        own. None when no failed rank left an error."""
        found: list[tuple[Failure, list[str]]] = []
        for i, f in enumerate(failures):
            if i == 0 or f.traceback or (f.exitcode or 0) > 0:
                error = self.error_of(f.rank, f)
            else:  # torchrun stopped it (SIGTERM): its last lines are its work, unless it printed a traceback first
                error = last_traceback(list(self.ranks.get(f.rank, ())))
            if error:
                found.append((f, error))
        own = [(f, e) for f, e in found if not is_follow_on(e)]
        return (own or found or [None])[0]


def error_tail(lines: Iterable[str]) -> str:
    """The error tail of a node from torchrun's output ``lines`` (see ``WorkerOutput.error_tail``)."""
    out = WorkerOutput()
    for ln in lines:
        out.add(ln)
    return out.error_tail()
