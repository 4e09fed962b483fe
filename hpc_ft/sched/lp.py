"""LP allocation: GPUs per job from a linear program solved by scipy.optimize.linprog (HiGHS). Pure.

Variables: ``x[j, g]`` in [0, 1], the fraction of job j planned at g GPUs (every valid count of the job), and
the makespan bound ``T``. Each job's duration ``d[j, g]`` and GPU-hours ``a[j, g]`` come from the job's
scaling model at integer g, so the program is linear whatever the model. Constraints::

    sum_g x[j, g] = 1                       every job runs once
    sum_g d[j, g] x[j, g] <= T              no job outlasts the sweep
    sum_jg a[j, g] x[j, g] <= G * T          the GPU budget's area (when budget.gpus is set)
    sum_jg d[j, g] x[j, g] <= P * T          at most P jobs at once (when array_parallelism is set)
    sum_jg a[j, g] x[j, g] <= H              GPU-hour / money budget (when set)

Every schedule of these jobs within the budget satisfies them, so the optimum ``T*`` is a lower bound on
any plan's makespan. Objectives, solved lexicographically (one LP per level, each fixing the level before):

- ``makespan``: minimize T, then the GPU-hours (a slight preference for fewer GPUs breaks ties).
- ``throughput``: the fewest GPU-hours (most jobs per GPU-hour: with the budget's GPUs kept busy, the most
  jobs per hour), i.e. only each job's cheapest counts; among those, minimize T as above.

Integrality: the relaxation may split a job between two adjacent counts. Each such job is rounded up
(keeps it within T*) or down (keeps GPU-hours within the LP's); the planner keeps whichever rounding
list-schedules better. ``scipy.optimize.milp`` would be exact but took 8-10 s (or hit its time limit) on
1,000 jobs where the relaxation takes well under 1 s.

T* bounds the makespan but its roundings need not come close to it: the fluid model lets the budget's area
be shared at any instant, while real jobs are indivisible and start in order, so rounding every split job
the same way can leave GPUs idle (all down) or run a half-empty last wave (all up). For ``makespan`` the
planner therefore list-schedules these roundings beside the simple policies' allocations and keeps the
shortest (``hpc_ft.sched.planner``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.optimize import linprog

from hpc_ft.errors import HpcFtError
from hpc_ft.sched.model import Allocation, Budget, SweepJob

_SUPPORT = 1e-7  # x above this is "used" by the LP
_FIX_REL = 1e-7  # slack when fixing an earlier objective level


@dataclass
class LinearProgram:
    """The allocation LP in linprog's form, with what it takes to read the solution back."""

    c_makespan: np.ndarray  # level-1 objective: minimize T
    c_gpu_hours: np.ndarray  # level-2 objective: GPU-hours, a slight preference for fewer GPUs
    a_ub: sparse.csr_array
    b_ub: np.ndarray
    a_eq: sparse.csr_array
    b_eq: np.ndarray
    counts: list[np.ndarray]  # each job's candidate GPU counts
    area: list[np.ndarray]  # each job's GPU-hours at those counts

    @property
    def t_col(self) -> int:
        return self.a_ub.shape[1] - 1


def build_lp(jobs: list[SweepJob], budget: Budget, parallelism: int | None,
             objective: str = "makespan") -> LinearProgram:
    """Matrices of the allocation LP (module docstring) for ``jobs`` under ``budget``."""
    counts = [np.fromiter(j.gpu_counts(budget.gpus), dtype=np.int64) for j in jobs]
    dur = [np.array([j.duration_h(int(g)) for g in c]) for j, c in zip(jobs, counts)]
    area = [g * d for g, d in zip(counts, dur)]
    if objective == "throughput":  # keep only each job's cheapest counts (level 1, separable)
        keep = [a <= a.min() * (1 + 1e-9) for a in area]
        counts = [c[k] for c, k in zip(counts, keep)]
        dur = [d[k] for d, k in zip(dur, keep)]
        area = [a[k] for a, k in zip(area, keep)]

    sizes = np.array([len(c) for c in counts])
    n, m = len(jobs), int(sizes.sum())
    job_of = np.repeat(np.arange(n), sizes)
    d_all, a_all = np.concatenate(dur), np.concatenate(area)
    g_all = np.concatenate(counts).astype(float)
    t_col = m  # index of T

    rows, cols, vals, b_ub = [], [], [], []

    def add_row(coef: np.ndarray, t_coef: float, rhs: float) -> None:
        r = len(b_ub)
        rows.extend([np.full(m, r), [r]])
        cols.extend([np.arange(m), [t_col]])
        vals.extend([coef, [t_coef]])
        b_ub.append(rhs)

    if budget.gpus is not None:
        add_row(a_all, -float(budget.gpus), 0.0)
    if parallelism is not None:
        add_row(d_all, -float(parallelism), 0.0)
    if budget.gpu_hours_cap is not None:
        add_row(a_all, 0.0, budget.gpu_hours_cap)
    base = len(b_ub)  # per-job rows: d_j . x_j - T <= 0
    rows.extend([base + job_of, base + np.arange(n)])
    cols.extend([np.arange(m), np.full(n, t_col)])
    vals.extend([d_all, -np.ones(n)])
    b_ub.extend([0.0] * n)

    a_ub = sparse.csr_array((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(len(b_ub), m + 1))
    a_eq = sparse.csr_array((np.ones(m), (job_of, np.arange(m))), shape=(n, m + 1))
    c1 = np.zeros(m + 1)
    c1[t_col] = 1.0
    hi = np.array([j.hi_gpus for j in jobs], dtype=float)[job_of]
    c2 = np.append(a_all * (1.0 + 1e-3 * g_all / hi), 0.0)
    return LinearProgram(c1, c2, a_ub, np.asarray(b_ub), a_eq, np.ones(n), counts, area)


def allocate_lp(jobs: list[SweepJob], budget: Budget, parallelism: int | None,
                objective: str = "makespan") -> Allocation:
    """GPUs per job from the LP; the Allocation's ``alternatives`` are its roundings for the planner to pick."""
    lp = build_lp(jobs, budget, parallelism, objective)
    counts, area, t_col = lp.counts, lp.area, lp.t_col
    m, n = t_col, len(jobs)
    sizes = np.array([len(c) for c in counts])
    cap_h = budget.gpu_hours_cap
    free = [(0, None)] * (m + 1)
    res1 = _solve(lp.c_makespan, lp, free)
    t_star = float(res1.x[t_col])
    # Level 2: fewest GPU-hours within T*.
    res2 = _solve(lp.c_gpu_hours, lp, free[:m] + [(0, t_star * (1 + _FIX_REL) + 1e-12)])

    x = res2.x[:m]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    up: dict[str, int] = {}
    down: dict[str, int] = {}
    gain: dict[str, float] = {}  # GPU-hours saved by rounding this job down instead of up
    for j, job in enumerate(jobs):
        sl = slice(starts[j], starts[j] + sizes[j])
        used = np.nonzero(x[sl] > _SUPPORT)[0]
        if used.size == 0:  # numerically all-zero row cannot happen with sum = 1; keep the cheapest
            used = np.array([0])
        lo_i, hi_i = int(used.min()), int(used.max())
        down[job.name] = int(counts[j][lo_i])
        up[job.name] = int(counts[j][hi_i])
        gain[job.name] = float(area[j][hi_i] - area[j][lo_i])

    fractional = [name for name in up if up[name] != down[name]]
    if cap_h is not None:  # rounding up may overspend: lower the costliest roundings until it fits
        spent = sum(float(job.gpu_hours(up[job.name])) for job in jobs)
        for name in sorted(fractional, key=lambda nm: -gain[nm]):
            if spent <= cap_h * (1 + 1e-12):
                break
            up[name] = down[name]
            spent -= gain[name]

    notes = [f"policy=lp objective={objective}: linprog(method='highs') over each job's valid GPU counts; "
             f"optimal fluid makespan T*={t_star:.4g} h is a lower bound on any schedule under this budget"
             + (" on each job's cheapest counts" if objective == "throughput" else ""),
             f"{len(fractional)} of {n} jobs split by the LP between two counts, rounded up or down"
             if fractional else "the LP solution is integral"]
    if up == down:
        return Allocation(up, notes, t_star, [up], ["the LP's integral solution"])
    return Allocation(up, notes, t_star, [up, down], ["the LP rounded up", "the LP rounded down"])


def _solve(c: np.ndarray, lp: LinearProgram, bounds: list):
    res = linprog(c, A_ub=lp.a_ub, b_ub=lp.b_ub, A_eq=lp.a_eq, b_eq=lp.b_eq, bounds=bounds, method="highs")
    if res.status != 0:
        # Inputs are checked against the budget before the LP runs, so this is a solver problem, not the user's.
        raise HpcFtError(f"LP allocation failed (HiGHS status {res.status}): {res.message}")
    return res
