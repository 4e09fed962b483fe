"""Submission order (fcfs | sjf | priority) and the list schedule it produces. Pure.

List scheduling in strict order, as Slurm starts the tasks of one job array: a job starts as soon as it is
next in order, fewer than ``parallelism`` jobs run, and its GPUs fit in the budget. No job overtakes an
earlier one (no backfill), so start times never decrease along the order.
"""

from __future__ import annotations

import heapq
import math

from hpc_ft.config.schema import SCHED_ORDERS
from hpc_ft.sched.model import Assignment, SweepJob

ORDERS = SCHED_ORDERS  # the names are part of the config schema, validated there


def order_jobs(jobs: list[SweepJob], gpus: dict[str, int], order: str) -> list[SweepJob]:
    """Jobs in submission order; ties always fall back to the sweep's own order (deterministic)."""
    if order == "fcfs":
        key = lambda j: (j.submit_order, j.name)  # noqa: E731
    elif order == "sjf":  # shortest predicted wall time on the GPUs the job was given
        key = lambda j: (j.duration_h(gpus[j.name]), j.submit_order, j.name)  # noqa: E731
    elif order == "priority":
        key = lambda j: (-j.priority, j.submit_order, j.name)  # noqa: E731
    else:
        raise ValueError(f"unknown order {order!r}")  # planner.validate_inputs rejects it first
    return sorted(jobs, key=key)


def list_schedule(ordered: list[SweepJob], gpus: dict[str, int], gpu_cap: int | None,
                  parallelism: int | None) -> list[Assignment]:
    """Start and end of every job (hours from the first start), in order."""
    cap = math.inf if gpu_cap is None else gpu_cap
    slots = math.inf if parallelism is None else parallelism
    running: list[tuple[float, int, int]] = []  # (end_h, order_index, gpus), earliest end first
    free, now = cap, 0.0
    out: list[Assignment] = []
    for i, job in enumerate(ordered):
        g = gpus[job.name]
        while free < g or len(running) >= slots:  # wait for the earliest ends until this job fits
            end_h, _, g_done = heapq.heappop(running)
            now = max(now, end_h)
            free += g_done
        end = now + job.duration_h(g)
        heapq.heappush(running, (end, i, g))
        free -= g
        out.append(Assignment(job=job, gpus=g, start_h=now, end_h=end, order_index=i))
    return out


def peak_concurrency(assignments: list[Assignment]) -> tuple[int, int]:
    """Most jobs and most GPUs running at the same instant (an end at t frees before a start at t)."""
    events = sorted([(a.start_h, 1, a.gpus) for a in assignments] + [(a.end_h, 0, a.gpus) for a in assignments])
    jobs = gpus = peak_jobs = peak_gpus = 0
    for _, is_start, g in events:
        jobs += 1 if is_start else -1
        gpus += g if is_start else -g
        peak_jobs, peak_gpus = max(peak_jobs, jobs), max(peak_gpus, gpus)
    return peak_jobs, peak_gpus
