"""plan_sweep: GPUs per job, submission order, array parallelism and the predicted outcome. Pure.

Bad input and budgets too small for the sweep are refused with hpc_ft.errors.ConfigError, every problem at
once, each naming the key, the value, the rule and the smallest value that fits.
"""

from __future__ import annotations

import math

from hpc_ft.config.validate import sweep_setting_problems
from hpc_ft.errors import ConfigError, Problem
from hpc_ft.sched.allocate import allocate
from hpc_ft.sched.model import Allocation, Assignment, Budget, Plan, QueueEstimate, SweepJob
from hpc_ft.sched.order import list_schedule, order_jobs, peak_concurrency


def plan_sweep(jobs: list[SweepJob], budget: Budget, policy: str = "equal", order: str = "fcfs",
               array_parallelism: int | None = None, objective: str = "makespan",
               wait: QueueEstimate | None = None) -> Plan:
    """Plan ``jobs`` under ``budget``: allocation ``policy``, submission ``order``, at most ``array_parallelism``
    jobs at once (None: as many as the GPU budget allows). ``objective`` steers policy=lp only.
    """
    validate_inputs(jobs, budget, policy, order, array_parallelism, objective)
    jobs = sorted(jobs, key=lambda j: (j.submit_order, j.name))  # the plan never depends on the input's order
    check_budget(jobs, budget)
    alloc = allocate(jobs, budget, policy, array_parallelism, objective)
    tried = [_schedule(jobs, gpus, budget, order, array_parallelism) for gpus in (alloc.alternatives or [alloc.gpus])]
    picked: list[str] = []
    if policy == "lp" and objective == "makespan":
        best, picked = _shortest_plan(jobs, alloc, tried, budget, order, array_parallelism)
    elif policy == "lp":  # throughput: fewest GPU-hours, then shortest
        best = min(tried, key=lambda t: (t[2], t[1]))
    else:
        best = min(tried, key=_shortest)
    assignments, makespan_h, gpu_hours = best
    _check_allocation_cost(jobs, budget, policy, gpu_hours)

    peak_jobs, peak_gpus = peak_concurrency(assignments)
    parallelism = array_parallelism if array_parallelism is not None else max(1, peak_jobs)
    capacity = budget.gpus if budget.gpus is not None else peak_gpus
    utilization = gpu_hours / (capacity * makespan_h) if capacity and makespan_h > 0 else 0.0
    bound = fluid_bound_h(assignments, budget.gpus, array_parallelism)
    if alloc.lower_bound_h is not None:
        bound = min(bound, alloc.lower_bound_h)
    return Plan(assignments=assignments, order=[a.job.name for a in assignments], array_parallelism=parallelism,
                makespan_h=makespan_h, utilization=utilization, gpu_hours=gpu_hours,
                cost=gpu_hours * budget.price_per_gpu_hour, policy=policy, order_policy=order,
                objective=objective if policy == "lp" else None, budget=budget, wait=wait, lower_bound_h=bound,
                assumptions=_assumptions(jobs, assignments, alloc, budget, parallelism, order) + picked)


def _schedule(jobs, gpus, budget, order, parallelism) -> tuple[list[Assignment], float, float]:
    ordered = order_jobs(jobs, gpus, order)
    assignments = list_schedule(ordered, gpus, budget.gpus, parallelism)
    makespan_h = max(a.end_h for a in assignments) - min(a.start_h for a in assignments)
    return assignments, makespan_h, sum(a.gpu_hours for a in assignments)


def _shortest(t: tuple[list[Assignment], float, float]) -> tuple[float, float]:
    """Sort key: shortest, then fewest GPU-hours (makespans equal to 9 decimals tie: float noise decides nothing)."""
    return (round(t[1], 9), t[2])


def _shortest_plan(jobs, alloc: Allocation, tried, budget: Budget, order: str,
                   parallelism: int | None) -> tuple[tuple[list[Assignment], float, float], list[str]]:
    """policy=lp objective=makespan: the shortest list schedule among the allocation's alternatives (the LP's
    roundings and the simple policies', hpc_ft.sched.allocate) within the GPU-hour budget, each also widened at
    its tail (``_widen_tail``), and the note saying which was kept.

    The LP's T* is a fluid bound; which integral allocation schedules best in this order is only known by
    scheduling it, so the candidates are compared on the planner's own list schedule (the simulator's times).
    """
    labels = alloc.labels or [f"alternative {i}" for i in range(len(tried))]
    cap = budget.gpu_hours_cap
    cands = [(t, g, lab) for t, g, lab in zip(tried, alloc.alternatives or [alloc.gpus], labels)
             if cap is None or t[2] <= cap * (1 + 1e-9)] or [(tried[0], alloc.gpus, labels[0])]
    evals = [max(_WIDEN_MIN_EVALS, _WIDEN_JOB_EVALS // len(jobs))]  # shared by every start, best start first
    widened = [(t2, g2, f"{lab}, its last-ending jobs widened")
               for t, g, lab in sorted(cands, key=lambda c: _shortest(c[0]))
               for t2, g2 in _widen_tail(jobs, g, t, budget, order, parallelism, evals)]
    best, _, label = min(cands + widened, key=lambda c: _shortest(c[0]))
    return best, [f"objective=makespan: kept {label} ({best[1]:.3f} h), the shortest in this order of the LP's "
                  "roundings and the other policies' allocations (equal at every number of jobs at once, "
                  "proportional, priority), each also with its last-ending jobs widened while that ends them sooner"]


_WIDEN_JOB_EVALS = 100_000  # job placements the tail widening may schedule in all: ~0.2 s at 1,000 jobs
_WIDEN_MIN_EVALS = 16


def _widen_tail(jobs, gpus: dict[str, int], sched, budget: Budget, order: str, parallelism: int | None,
                evals: list[int]) -> list[tuple[tuple[list[Assignment], float, float], dict[str, int]]]:
    """Give the job that ends last one more GPU while that makes the latest ends come sooner.

    A list schedule's last wave often leaves GPUs idle (6 jobs of 2 GPUs on 8: 4 run, then 2 with 4 GPUs idle);
    widening the jobs that end last fills them (the last 2 on 4 GPUs each: 2.2 h -> 1.75 h at Amdahl p = 0.9).
    Progress is judged on every end time, latest first, so widening one of two jobs that end together counts.
    ``evals[0]`` is the schedules left to try (shared across calls); GPU-hours stay within the budget. Returns
    the accepted steps, in order.
    """
    cap_h, cap_g = budget.gpu_hours_cap, budget.gpus
    steps = []
    while evals[0] > 0:
        last = max(sched[0], key=lambda a: (a.end_h, a.order_index))
        job, g = last.job, gpus[last.job.name]
        if g + 1 > min(job.hi_gpus, cap_g if cap_g is not None else job.hi_gpus):
            break
        trial = {**gpus, job.name: g + 1}
        evals[0] -= 1
        t = _schedule(jobs, trial, budget, order, parallelism)
        if (cap_h is not None and t[2] > cap_h * (1 + 1e-9)) or not _ends_sooner(t[0], sched[0]):
            break
        gpus, sched = trial, t
        steps.append((t, trial))
    return steps


def _ends_sooner(a: list[Assignment], b: list[Assignment]) -> bool:
    """End times of ``a``, latest first, are lexicographically earlier than ``b``'s (beyond rounding)."""
    for x, y in zip(sorted((s.end_h for s in a), reverse=True), sorted((s.end_h for s in b), reverse=True)):
        if abs(x - y) > 1e-9 * max(1.0, abs(y)):
            return x < y
    return False


def fluid_bound_h(assignments: list[Assignment], gpu_cap: int | None, parallelism: int | None) -> float:
    """No schedule of these jobs on these GPU counts ends sooner: max(longest job, area / G, job-hours / P)."""
    bound = max(a.duration_h for a in assignments)
    if gpu_cap is not None:
        bound = max(bound, sum(a.gpu_hours for a in assignments) / gpu_cap)
    if parallelism is not None:
        bound = max(bound, sum(a.duration_h for a in assignments) / parallelism)
    return bound


def validate_inputs(jobs: list[SweepJob], budget: Budget, policy: str, order: str,
                    array_parallelism: int | None, objective: str) -> None:
    """Raise ConfigError listing every bad value among the planner's inputs."""
    # The sweep-wide settings have one rule, in the config's validation (the same values as sched.*).
    p = sweep_setting_problems(policy, order, objective, array_parallelism, budget.gpus, budget.gpu_hours,
                               budget.money)

    def need(ok: bool, key: str, value: object, rule: str, fix: str) -> None:
        if not ok:
            p.append(Problem(key, value, rule, fix))

    need(_positive(budget.price_per_gpu_hour), "telemetry.price_per_gpu_hour", budget.price_per_gpu_hour,
         "must be a positive price", "pass telemetry.price_per_gpu_hour=2.0")
    need(len(jobs) > 0, "sweep", "[]", "has no jobs", "pass at least one sweep point")
    seen: set[str] = set()
    for j in jobs:
        k = f"sweep[{j.name}]"
        need(bool(j.name) and j.name not in seen, f"{k}.name", j.name, "must be non-empty and unique",
             "give every sweep point its own name")
        seen.add(j.name)
        need(_is_int(j.gpus) and j.gpus >= 1, f"{k}.gpus", j.gpus, "must be a whole number, at least 1",
             "request GPUs with resources.gpus_per_node=1 or more")
        need(_is_int(j.lo_gpus) and _is_int(j.hi_gpus) and 1 <= j.lo_gpus <= j.hi_gpus,
             f"{k}.min_gpus..max_gpus", f"{j.lo_gpus}..{j.hi_gpus}", "must be whole numbers with 1 <= min <= max",
             "pass a range such as 1..8")
        need(_positive(j.est_duration_h), f"{k}.est_duration_h", j.est_duration_h, "must be a positive duration",
             "pass the hours one run takes, or earlier runs' reports to estimate it")
        need(isinstance(j.priority, (int, float)) and math.isfinite(j.priority), f"{k}.priority", j.priority,
             "must be a finite number", "pass priority=1.0")
        need(isinstance(j.parallel_fraction, (int, float)) and 0.0 <= j.parallel_fraction <= 1.0,
             f"{k}.parallel_fraction", j.parallel_fraction, "must be in [0, 1] (Amdahl's p)",
             "pass 1.0 for linear scaling")
    if p:
        raise ConfigError(p)


def min_gpu_hours(jobs: list[SweepJob], gpu_cap: int | None) -> float:
    """GPU-hours of the sweep with every job on its cheapest valid count (no allocation spends less)."""
    total = 0.0
    for j in jobs:
        counts = j.gpu_counts(gpu_cap) or range(j.lo_gpus, j.lo_gpus + 1)
        total += min(j.gpu_hours(g) for g in counts)
    return total


def check_budget(jobs: list[SweepJob], budget: Budget) -> None:
    """Refuse a budget the sweep cannot fit in, naming the smallest budget that fits."""
    p: list[Problem] = []
    if budget.gpus is not None:
        biggest = max(jobs, key=lambda j: (j.lo_gpus, -j.submit_order))
        if biggest.lo_gpus > budget.gpus:
            p.append(Problem("sched.budget_gpus", budget.gpus,
                             f"is too small: job {biggest.name!r} needs at least {biggest.lo_gpus} GPUs at once",
                             f"pass sched.budget_gpus={biggest.lo_gpus}"))
    need_h = min_gpu_hours(jobs, budget.gpus)
    if budget.gpu_hours is not None and budget.gpu_hours < need_h * (1 - 1e-9):
        p.append(Problem("sched.budget_gpu_hours", budget.gpu_hours,
                         f"is too small: the sweep needs at least {_up(need_h, 3)} GPU-hours "
                         "(every job on its fewest GPUs)", f"pass sched.budget_gpu_hours={_up(need_h, 3)}"))
    if budget.money is not None:
        need_money = need_h * budget.price_per_gpu_hour
        if budget.money < need_money * (1 - 1e-9):
            p.append(Problem("sched.budget_money", budget.money,
                             f"is too small: the sweep needs at least {_up(need_money, 2)} "
                             f"({_up(need_h, 3)} GPU-hours at {budget.price_per_gpu_hour:g} per GPU-hour)",
                             f"pass sched.budget_money={_up(need_money, 2)}"))
    if p:
        raise ConfigError(p)


def _check_allocation_cost(jobs: list[SweepJob], budget: Budget, policy: str, gpu_hours: float) -> None:
    """A policy may give GPUs that cost more GPU-hours (scaling below linear) than the budget holds."""
    cap = budget.gpu_hours_cap
    if cap is None or gpu_hours <= cap * (1 + 1e-9):
        return
    floor_h = min_gpu_hours(jobs, budget.gpus)
    if budget.gpu_hours is not None and budget.gpu_hours <= cap * (1 + 1e-12):
        key, value, need = "sched.budget_gpu_hours", budget.gpu_hours, _up(gpu_hours, 3)
        unit = "GPU-hours"
    else:
        key, value, need = "sched.budget_money", budget.money, _up(gpu_hours * budget.price_per_gpu_hour, 2)
        unit = f"in money ({_up(gpu_hours, 3)} GPU-hours)"
    raise ConfigError([Problem(key, value, f"is too small for policy={policy}, whose allocation needs {need} {unit}"
                               f"; the sweep fits in {_up(floor_h, 3)} GPU-hours on fewer GPUs per job",
                               f"pass {key}={need}, or sched.policy=lp to fit the budget")])


def _assumptions(jobs, assignments, alloc: Allocation, budget: Budget, parallelism: int, order: str) -> list[str]:
    ps = sorted({j.parallel_fraction for j in jobs})
    p_text = f"p = {ps[0]:g} for every job" if len(ps) == 1 else f"p from {ps[0]:g} to {ps[-1]:g}"
    notes = [f"scaling: Amdahl's law, duration(g) = est_duration_h * ((1-p) + p/g) / ((1-p) + p/gpus); {p_text}"
             + (" (linear: GPU-hours do not depend on g)" if ps == [1.0] else ""),
             "durations are the estimates, taken as exact; times are hours from the first start, queue wait "
             "not included",
             f"order={order}: jobs start in this order and none overtakes an earlier one (as Slurm starts the "
             "tasks of one array)"]
    notes += alloc.notes
    counts = sorted({a.gpus for a in assignments})
    if len(counts) > 1:
        notes.append(f"{len(counts)} distinct GPU counts ({', '.join(map(str, counts))}): one Slurm array per count, "
                     "since the tasks of an array share one resource request; the order across arrays is not "
                     "enforced by Slurm")
    if budget.gpus is not None and parallelism * max(counts) > budget.gpus:
        notes.append(f"Slurm enforces only the array's %{parallelism}; staying within {budget.gpus} GPUs at once "
                     f"also needs a QOS limit (GrpTRES=gres/gpu={budget.gpus})")
    return notes


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _up(x: float, decimals: int) -> float:
    """``x`` rounded up at ``decimals`` places (a budget this size fits; printing never rounds it below)."""
    scale = 10 ** decimals
    return math.ceil(x * scale * (1 - 1e-12)) / scale
