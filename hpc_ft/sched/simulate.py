"""Discrete-event simulation of a plan, an independent check of the planner's list schedule. Pure.

Jobs are released in the plan's order; an event loop advances from one completion to the next, frees its
GPUs and slot, and starts queued jobs from the head while fewer than ``array_parallelism`` run and their GPUs
fit in the budget (no overtaking, as the planner assumes).

Agreement with the planner: with the planned durations the two give the same times (to floating-point
rounding; the tests use 1e-9 relative). With every duration scaled by a factor in [1 - e, 1 + e] the
simulated makespan stays within [1 - e, 1 + e] times the planned one: scaling all durations scales all
times, and in-order list scheduling never finishes earlier when any job takes longer.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from dataclasses import dataclass

from hpc_ft.sched.model import Plan


@dataclass(frozen=True)
class SimResult:
    makespan_h: float
    utilization: float  # GPU-hours / (capacity * makespan); capacity: the GPU budget, else the peak in use
    gpu_hours: float
    start_h: dict[str, float]
    end_h: dict[str, float]
    peak_jobs: int
    peak_gpus: int


def simulate(plan: Plan, *, duration_noise: float = 0.0, seed: int = 0) -> SimResult:
    """Simulate ``plan``; ``duration_noise`` e multiplies each duration by uniform [1 - e, 1 + e] (seeded)."""
    if not 0.0 <= duration_noise < 1.0:
        raise ValueError(f"duration_noise must be in [0, 1), got {duration_noise}")
    rng = random.Random(seed)
    tasks = []
    for a in plan.assignments:  # already in submission order
        factor = 1.0 + duration_noise * rng.uniform(-1.0, 1.0) if duration_noise else 1.0
        tasks.append((a.job.name, a.gpus, a.job.duration_h(a.gpus) * factor))
    return simulate_tasks(tasks, plan.budget.gpus, plan.array_parallelism)


def simulate_tasks(tasks: list[tuple[str, int, float]], gpu_cap: int | None,
                   parallelism: int | None) -> SimResult:
    """Event loop over (name, gpus, duration_h) released in list order."""
    cap = math.inf if gpu_cap is None else gpu_cap
    slots = math.inf if parallelism is None else parallelism
    queue = deque(tasks)
    events: list[tuple[float, int, str, int]] = []  # completion events: (time_h, seq, name, gpus)
    start_h: dict[str, float] = {}
    end_h: dict[str, float] = {}
    free, running, seq = cap, 0, 0
    now = 0.0

    def release(now: float) -> None:
        nonlocal free, running, seq
        while queue and running < slots and queue[0][1] <= free:
            name, g, d = queue.popleft()
            start_h[name] = now
            heapq.heappush(events, (now + d, seq, name, g))
            seq += 1
            free -= g
            running += 1

    release(now)
    while events:
        now, _, name, g = heapq.heappop(events)
        done = [(name, g)]
        while events and events[0][0] == now:  # simultaneous completions free together
            _, _, n2, g2 = heapq.heappop(events)
            done.append((n2, g2))
        for n_done, g_done in done:
            end_h[n_done] = now
            free += g_done
            running -= 1
        release(now)
    if queue:  # a task larger than the budget can never start; the planner refuses such plans first
        raise ValueError(f"task {queue[0][0]!r} needs {queue[0][1]} GPUs, more than the budget of {gpu_cap}")
    makespan = max(end_h.values(), default=0.0) - min(start_h.values(), default=0.0)
    gpu_hours = sum(g * d for _, g, d in tasks)
    peak_jobs, peak_gpus = _peaks(tasks, start_h, end_h)
    capacity = gpu_cap if gpu_cap is not None else peak_gpus
    util = gpu_hours / (capacity * makespan) if capacity and makespan > 0 else 0.0
    return SimResult(makespan, util, gpu_hours, start_h, end_h, peak_jobs, peak_gpus)


def _peaks(tasks, start_h, end_h) -> tuple[int, int]:
    events = sorted([(start_h[n], 1, g) for n, g, _ in tasks] + [(end_h[n], 0, g) for n, g, _ in tasks])
    jobs = gpus = pj = pg = 0
    for _, is_start, g in events:
        jobs += 1 if is_start else -1
        gpus += g if is_start else -g
        pj, pg = max(pj, jobs), max(pg, gpus)
    return pj, pg
