"""Queueing estimates of the wait before a job starts: M/M/1 and M/M/c (Erlang C). Pure.

Rates are given, or estimated from the cluster's recent history as ``sacct`` reports it; this module only
parses the text (running sacct is a side effect that lives in hpc_ft.sweep.history)::

    sacct --parsable2 -X -o Submit,Start,End,AllocTRES [-S now-7days -a]
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from datetime import datetime, timezone

from hpc_ft.errors import ConfigError, Problem
from hpc_ft.sched.model import QueueEstimate

SACCT_ARGS = ["sacct", "--parsable2", "-X", "-o", "Submit,Start,End,AllocTRES"]


def erlang_c(c: int, offered_load: float) -> float:
    """P(an arrival waits) in M/M/c with ``offered_load`` a = lambda/mu < c.

    Computed through the Erlang B recursion B(k) = a B(k-1) / (k + a B(k-1)), which stays finite for large c
    where a**c / c! would overflow; then C = B / (1 - rho (1 - B)).
    """
    b = 1.0
    for k in range(1, c + 1):
        b = offered_load * b / (k + offered_load * b)
    rho = offered_load / c
    return b / (1.0 - rho * (1.0 - b))


def mmc(lambda_per_h: float, mu_per_h: float, c: int, assumptions: list[str] | None = None,
        observed_wq_h: float | None = None) -> QueueEstimate:
    """Expected wait Wq = C(c, a) / (c mu - lambda) of an M/M/c queue; unstable when rho >= 1."""
    problems = []
    if not lambda_per_h > 0 or not math.isfinite(lambda_per_h):
        problems.append(Problem("lambda_per_h", lambda_per_h, "must be a positive arrival rate",
                                "pass the jobs submitted per hour, e.g. 2.0"))
    if not mu_per_h > 0 or not math.isfinite(mu_per_h):
        problems.append(Problem("mu_per_h", mu_per_h, "must be a positive service rate",
                                "pass 1 / mean run time in hours, e.g. 0.5"))
    if not (isinstance(c, int) and c >= 1):
        problems.append(Problem("c", c, "must be a whole number of servers, at least 1", "pass c=1"))
    if problems:
        raise ConfigError(problems)
    notes = list(assumptions or [])
    notes.append("M/M/c: Poisson arrivals, exponential run times, c identical servers, first come first served")
    a = lambda_per_h / mu_per_h
    rho = a / c
    if rho >= 1.0:
        notes.append(f"unstable: rho = lambda/(c mu) = {rho:.3g} >= 1, work arrives faster than {c} server(s) "
                     "finish it, so the queue and the wait grow without bound (Wq is infinite)")
        return QueueEstimate(math.inf, 1.0, rho, c, lambda_per_h, mu_per_h, notes, False, observed_wq_h)
    p_wait = erlang_c(c, a)
    wq_h = p_wait / (c * mu_per_h - lambda_per_h)
    return QueueEstimate(wq_h, p_wait, rho, c, lambda_per_h, mu_per_h, notes, True, observed_wq_h)


def mm1(lambda_per_h: float, mu_per_h: float) -> QueueEstimate:
    """M/M/1: Wq = rho / (mu - lambda), P(wait) = rho."""
    return mmc(lambda_per_h, mu_per_h, 1)


@dataclass(frozen=True)
class HistoryRecord:
    """One finished, running or pending job from sacct; times in seconds (only differences matter)."""

    submit_s: float
    start_s: float | None  # None: not started (pending, or cancelled before starting)
    end_s: float | None  # None: not ended (running or pending)
    gpus: int  # from AllocTRES gres/gpu (0 for CPU jobs and pending jobs)


_NO_TIME = {"", "Unknown", "None", "N/A"}
_EPOCH = datetime(1970, 1, 1)


def _time_s(text: str) -> float | None:
    text = text.strip()
    if text in _NO_TIME:
        return None
    when = datetime.fromisoformat(text)
    if when.tzinfo is not None:
        when = when.astimezone(timezone.utc).replace(tzinfo=None)
    # sacct prints local time without a zone; read as UTC, which cancels out in the differences used.
    return (when - _EPOCH).total_seconds()


def _gpus(alloc_tres: str) -> int:
    untyped, typed = None, 0
    for item in alloc_tres.split(","):
        key, _, value = item.strip().partition("=")
        if key == "gres/gpu":
            untyped = int(value)
        elif key.startswith("gres/gpu:"):  # gres/gpu:a100=2, listed beside the untyped total when both exist
            typed += int(value)
    return untyped if untyped is not None else typed


_SACCT_PREFIX = re.compile(r"^sacct:\s*(?:(?P<level>error|fatal|warning|debug\w*):\s*)?", re.IGNORECASE)
SACCT_REASON_CHARS = 120  # the reason is one bullet of the plan's assumptions: one line, cut beyond this


def sacct_failure_reason(returncode: int, stderr: str) -> str:
    """One line saying why sacct gave no history, for the plan's assumptions: sacct's ``fatal:`` message, else
    its first non-empty message, without the ``sacct: error:`` prefixes. sacct without a Slurm config prints a
    chain of DNS and config-fetch errors before its fatal line; pasted whole it broke the bullet list."""
    messages = []  # (level, message) per non-empty line
    for line in stderr.splitlines():
        m = _SACCT_PREFIX.match(line.strip())
        text = " ".join(line.strip()[m.end():].split()) if m else " ".join(line.split())
        if text:
            messages.append(((m.group("level") or "").lower() if m else "", text))
    fatal = [text for level, text in messages if level == "fatal"]
    detail = fatal[-1] if fatal else messages[0][1] if messages else ""
    if len(detail) > SACCT_REASON_CHARS:
        detail = detail[: SACCT_REASON_CHARS - 3].rstrip() + "..."
    return (f"Slurm's accounting could not be read (sacct exited {returncode}"
            + (f": {detail})" if detail else ", with no message)"))


def parse_sacct(text: str) -> list[HistoryRecord]:
    """Parse ``sacct --parsable2 -X -o Submit,Start,End,AllocTRES`` output (header optional)."""
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("|")
        if len(fields) < 4:
            raise ValueError(f"sacct line {lineno}: expected Submit|Start|End|AllocTRES, got {line!r}")
        if fields[0].strip() == "Submit":  # the header
            continue
        try:
            submit, start, end = (_time_s(f) for f in fields[:3])
            gpus = _gpus(fields[3])
        except ValueError as exc:
            raise ValueError(f"sacct line {lineno}: {exc} in {line!r}") from None
        if submit is not None:
            records.append(HistoryRecord(submit, start, end, gpus))
    return records


def estimate_from_history(records: list[HistoryRecord], servers: int | None = None,
                          cluster_gpus: int | None = None) -> QueueEstimate:
    """M/M/c estimate with rates from history: lambda from submissions, mu from finished run times.

    ``c``: ``servers`` if given; else ``cluster_gpus`` / mean GPUs per job; else the most jobs seen running at
    once (a proxy for the share of the cluster these jobs get).
    """
    subs = sorted(r.submit_s for r in records)
    finished = [r for r in records if r.start_s is not None and r.end_s is not None and r.end_s > r.start_s]
    problems = []
    if len(subs) < 2 or subs[-1] <= subs[0]:
        problems.append(Problem("history", f"{len(subs)} submissions", "needs at least 2 submissions at different "
                                "times to estimate an arrival rate", "widen the sacct window (-S now-7days)"))
    if not finished:
        problems.append(Problem("history", "0 finished jobs", "needs finished jobs to estimate run times",
                                "widen the sacct window or pass mu_per_h"))
    if problems:
        raise ConfigError(problems)
    span_h = (subs[-1] - subs[0]) / 3600.0
    lam = (len(subs) - 1) / span_h
    run_h = [(r.end_s - r.start_s) / 3600.0 for r in finished]
    mean_run_h = statistics.fmean(run_h)
    cv = statistics.pstdev(run_h) / mean_run_h if len(run_h) > 1 else float("nan")
    notes = [f"lambda = {lam:.4g}/h from {len(subs)} submissions over {span_h:.4g} h",
             f"mu = 1/{mean_run_h:.4g} h from {len(finished)} finished jobs (run-time CV {cv:.2f}; "
             "M/M/c assumes 1)"]
    if servers is not None:
        c = servers
        notes.append(f"c = {c} servers, as given")
    elif cluster_gpus is not None:
        gpu_jobs = [r.gpus for r in finished if r.gpus > 0]
        mean_gpus = statistics.fmean(gpu_jobs) if gpu_jobs else 1.0
        c = max(1, int(cluster_gpus // mean_gpus))
        notes.append(f"c = {c}: {cluster_gpus} GPUs / {mean_gpus:.3g} GPUs per job on average")
    else:
        c = max(1, _peak_running(finished))
        notes.append(f"c = {c}: the most jobs seen running at once (a proxy for the share of the cluster available)")
    started = [r for r in records if r.start_s is not None]
    observed = statistics.fmean((r.start_s - r.submit_s) / 3600.0 for r in started) if started else None
    if observed is not None:
        notes.append(f"observed mean wait {observed:.4g} h over {len(started)} started jobs")
    return mmc(lam, 1.0 / mean_run_h, c, notes, observed)


def _peak_running(records: list[HistoryRecord]) -> int:
    events = sorted([(r.start_s, 1) for r in records] + [(r.end_s, -1) for r in records])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak
