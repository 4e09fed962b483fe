"""Allocation policies: how many GPUs each sweep job gets under the budget. Pure.

All policies share the GPU budget among ``k = min(jobs, array_parallelism or jobs)`` jobs running at once
and round down to a valid count (an integer in the job's [min_gpus, max_gpus], never above the budget):

- ``equal``: every job gets ``budget.gpus // k``.
- ``priority``: jobs taken ``k`` at a time in priority order (they run together); in each group every job gets
  its minimum, then the remaining GPUs go to the higher-priority jobs first, each up to its maximum.
- ``proportional``: a share proportional to the job's work (GPU-hours at its reference request), so
  ``budget.gpus / k`` for a job of average work; with linear scaling this evens out the durations.
- ``lp``: a linear program (see ``hpc_ft.sched.lp``). For ``objective=makespan`` its roundings come with the
  other policies' allocations (equal at every number of jobs at once, proportional, priority) as alternatives:
  the planner list-schedules them all and keeps the shortest, so the LP never plans longer than they would.

Without a GPU budget there is nothing to share: equal, priority and proportional give every job its request.
"""

from __future__ import annotations

import math

from hpc_ft.config.schema import SCHED_OBJECTIVES, SCHED_POLICIES
# Allocation lives in model so the LP (hpc_ft.sched.lp) can return one without importing this module.
from hpc_ft.sched.model import Allocation, Budget, SweepJob

# The names are part of the config schema (validated there, before anything is planned); each is implemented here.
POLICIES = SCHED_POLICIES
OBJECTIVES = SCHED_OBJECTIVES


def concurrent_slots(n_jobs: int, parallelism: int | None) -> int:
    return max(1, min(n_jobs, parallelism or n_jobs))


def allocate(jobs: list[SweepJob], budget: Budget, policy: str, parallelism: int | None = None,
             objective: str = "makespan") -> Allocation:
    """GPUs per job under ``policy``; inputs are assumed validated (planner.validate_inputs)."""
    if policy == "lp":
        from hpc_ft.sched.lp import allocate_lp  # scipy is imported only when the LP runs

        alloc = allocate_lp(jobs, budget, parallelism, objective)
        return with_simple_alternatives(alloc, jobs, budget, parallelism) if objective == "makespan" else alloc
    if budget.gpus is None:
        return Allocation({j.name: j.clamp(j.gpus) for j in jobs},
                          [f"policy={policy}: no GPU budget to share, every job gets its request"])
    k = concurrent_slots(len(jobs), parallelism)
    fn = {"equal": _equal, "priority": _priority, "proportional": _proportional}[policy]
    return fn(jobs, budget.gpus, k)


def with_simple_alternatives(alloc: Allocation, jobs: list[SweepJob], budget: Budget,
                             parallelism: int | None) -> Allocation:
    """``alloc`` with the simple policies' allocations added to its alternatives (each labelled, none twice).

    Equal is tried at every number of jobs at once (1 .. the slots), not only at the slots: sharing the budget
    among fewer, wider jobs is what fills it when each job's minimum would leave GPUs idle.
    """
    alts, labels = list(alloc.alternatives or [alloc.gpus]), list(alloc.labels or ["the LP's allocation"])
    k = concurrent_slots(len(jobs), parallelism)
    if budget.gpus is None:
        extra = [allocate(jobs, budget, "equal", parallelism)]
        extra_labels = ["every job's request"]
    else:
        extra = [_proportional(jobs, budget.gpus, k), _priority(jobs, budget.gpus, k)]
        extra_labels = ["policy=proportional", "policy=priority"]
        seen: set[int] = set()
        lo, hi = min(j.lo_gpus for j in jobs), max(j.hi_gpus for j in jobs)
        for w in range(k, 0, -1):  # the equal policy itself (k at once) first; each distinct share once
            share = budget.gpus // w
            if max(lo, min(hi, share)) not in seen:  # shares beyond every job's range clamp alike
                seen.add(max(lo, min(hi, share)))
                extra.append(_equal(jobs, budget.gpus, w))
                extra_labels.append("policy=equal" if w == k else f"policy=equal at {share} GPUs per job")
    for a, label in zip(extra, extra_labels):
        if a.gpus not in alts:
            alts.append(a.gpus)
            labels.append(label)
    return Allocation(alloc.gpus, alloc.notes, alloc.lower_bound_h, alts, labels)


def _fit(job: SweepJob, gpus: int, cap: int) -> int:
    return job.clamp(min(gpus, cap))


def _equal(jobs: list[SweepJob], cap: int, k: int) -> Allocation:
    share = cap // k
    gpus = {j.name: _fit(j, share, cap) for j in jobs}
    note = f"policy=equal: {cap} GPUs shared by {k} jobs at once, {share} each"
    if any(g != share for g in gpus.values()):
        got = sorted(set(gpus.values()))
        note += (f"; clamped to each job's [min_gpus, max_gpus]: {', '.join(map(str, got))} GPUs per job "
                 "(fewer jobs run at once)")
    return Allocation(gpus, [note])


def priority_key(job: SweepJob) -> tuple[float, int]:
    return (-job.priority, job.submit_order)


def _priority(jobs: list[SweepJob], cap: int, k: int) -> Allocation:
    ranked = sorted(jobs, key=priority_key)
    out: dict[str, int] = {}
    for first in range(0, len(ranked), k):
        group = ranked[first:first + k]
        left = max(0, cap - sum(j.lo_gpus for j in group))
        for j in group:  # highest priority first
            extra = min(j.hi_gpus - j.lo_gpus, left, cap - j.lo_gpus)
            out[j.name] = j.lo_gpus + max(0, extra)
            left -= max(0, extra)
    return Allocation({j.name: out[j.name] for j in jobs},
                      [f"policy=priority: groups of {k} in priority order; each gets its minimum, "
                       f"the rest of the {cap} GPUs go to higher priority first"])


def _proportional(jobs: list[SweepJob], cap: int, k: int) -> Allocation:
    work = {j.name: j.gpu_hours(j.gpus) for j in jobs}
    mean = sum(work.values()) / len(jobs)
    # 1e-9 keeps exact quotients such as 2.9999999999 on the right side of floor.
    out = {j.name: _fit(j, math.floor(cap * work[j.name] / (k * mean) + 1e-9), cap) for j in jobs}
    return Allocation(out, [f"policy=proportional: GPUs proportional to each job's GPU-hours at its request, "
                            f"{cap / k:g} for a job of average work ({mean:.4g} GPU-h)"])
