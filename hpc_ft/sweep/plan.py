"""Composed sweep jobs -> the planner's SweepJobs, the plan, and the overrides that apply it. Pure.

The sweep-wide settings (policy, order, objective, budgets, array parallelism, executor) must be the same in
every job: there is one plan per sweep. CPU jobs count one unit per node in the planner's GPU columns.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from hpc_ft.config.schema import JobConf
from hpc_ft.errors import ConfigError, Problem
from hpc_ft.sched import Budget, Plan, SweepJob, estimate_durations, plan_sweep

DEFAULT_DURATION_H = 1.0  # assumed when neither sched.est_duration_h nor earlier runs give one
SWEEP_WIDE = ("sched.policy", "sched.order", "sched.objective", "sched.budget_gpus", "sched.budget_gpu_hours",
              "sched.budget_money", "sched.array_parallelism", "executor.name", "wait", "dry_run", "preflight",
              "telemetry.price_per_gpu_hour", "telemetry.price_per_node_hour")


def _get(conf: JobConf, dotted: str) -> Any:
    obj: Any = conf
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def varying(points: Sequence[Sequence[str]]) -> list[list[str]]:
    """Each point's overrides that differ across the sweep (what tells its jobs apart); all if none differ."""
    if len(points) < 2:
        return [list(p) for p in points]
    common = set(points[0]).intersection(*map(set, points[1:]))
    return [[o for o in p if o not in common] or list(p) for p in points]


def job_units(conf: JobConf) -> int:
    """What the job holds in the planner's GPU columns: its GPUs, or one per node for a CPU job."""
    r = conf.resources
    return r.nodes * r.gpus_per_node if r.gpus_per_node > 0 else r.nodes


def sweep_job(conf: JobConf, num: int, overrides: Sequence[str]) -> SweepJob:
    """The planner's view of sweep job ``num`` (named by its Hydra job number)."""
    s = conf.sched
    ranged = conf.resources.gpus_per_node > 0 and conf.resources.nodes == 1
    return SweepJob(name=str(num), gpus=job_units(conf), est_duration_h=s.est_duration_h or 0.0,
                    priority=float(s.priority), submit_order=num, overrides=list(overrides),
                    min_gpus=s.min_gpus if ranged else None, max_gpus=s.max_gpus if ranged else None,
                    parallel_fraction=float(s.parallel_fraction))


def budget_of(conf: JobConf, cpu_only: bool = False) -> Budget:
    """The sweep's budget; a sweep of CPU-only jobs counts nodes and is priced per node-hour."""
    s = conf.sched
    price = conf.telemetry.price_per_node_hour if cpu_only else conf.telemetry.price_per_gpu_hour
    return Budget(gpus=s.budget_gpus, gpu_hours=s.budget_gpu_hours, money=s.budget_money, price_per_gpu_hour=price)


def check_sweep_wide(confs: Sequence[JobConf]) -> None:
    """Refuse a sweep over a setting that belongs to the whole sweep (there is one plan, one submission)."""
    problems = []
    for key in SWEEP_WIDE:
        values = sorted({repr(_get(c, key)) for c in confs})
        if len(values) > 1:
            swept = list(dict.fromkeys(_get(c, key) for c in confs))
            problems.append(Problem(key, swept, "holds for the whole sweep and cannot be swept",
                                    f"pass a single value, e.g. {key}={_get(confs[0], key)}"))
    if problems:
        raise ConfigError(problems)


def _in_nodes(text: str) -> str:
    """A planner's message about GPUs as it reads for a sweep of CPU-only jobs, which it plans in nodes."""
    return re.sub(r"\bGPU-hours\b", "node-hours", re.sub(r"\bGPUs\b", "nodes", text))


def plan_confs(confs: Sequence[JobConf], overrides: Sequence[Sequence[str]],
               history: list[dict[str, Any]] | None = None, first_num: int = 0) -> Plan:
    """Plan the sweep: one SweepJob per composed job, durations filled from history or the default."""
    check_sweep_wide(confs)
    jobs = [sweep_job(c, first_num + i, o) for i, (c, o) in enumerate(zip(confs, overrides))]
    missing = any(j.est_duration_h <= 0 for j in jobs)
    jobs, notes = estimate_durations(jobs, history or [], default_h=DEFAULT_DURATION_H)
    base = confs[0]
    s = base.sched
    cpu_only = all(c.resources.gpus_per_node == 0 for c in confs)
    try:
        plan = plan_sweep(jobs, budget_of(base, cpu_only), policy=s.policy, order=s.order,
                          array_parallelism=s.array_parallelism, objective=s.objective)
    except ConfigError as exc:
        if not cpu_only:
            raise
        # The planner counts units; a CPU-only sweep's units are nodes (sched.budget_gpus counts them).
        raise ConfigError([dataclasses.replace(p, rule=_in_nodes(p.rule)) for p in exc.problems]) from None
    extra = []
    if missing:
        extra.append("durations: " + "; ".join(notes) if len(notes) <= 4 else
                     f"durations: {len(notes)} jobs estimated ({notes[0]}; ...)")
        if any("default" in n for n in notes):
            extra.append(f"no sched.est_duration_h and no earlier run: {DEFAULT_DURATION_H:g} h assumed, so times "
                         "are nominal; pass sched.est_duration_h=HOURS or sched.history=[RUN_OR_SWEEP_DIR]")
    if cpu_only:
        extra.append("CPU jobs only (resources.gpus_per_node=0): the plan counts nodes and node-hours "
                     "(sched.budget_gpus and sched.budget_gpu_hours count them too), priced at "
                     "telemetry.price_per_node_hour")
    elif any(c.resources.gpus_per_node == 0 for c in confs):
        extra.append("CPU jobs (resources.gpus_per_node=0) count one unit per node in the gpus columns and budget")
    return dataclasses.replace(plan, assumptions=list(plan.assumptions) + extra, unit="node" if cpu_only else "GPU")


def allocation_overrides(plan: Plan, confs: Sequence[JobConf], first_num: int = 0) -> dict[int, list[str]]:
    """Overrides that give each job the GPUs the plan allocated (only for jobs whose count changed)."""
    gpus = plan.gpus_by_job()
    out: dict[int, list[str]] = {}
    for i, conf in enumerate(confs):
        num = first_num + i
        g = gpus[str(num)]
        if g != job_units(conf):  # only one-node GPU jobs have a range, so g GPUs sit on that one node
            out[num] = [f"resources.gpus_per_node={g}"]
    return out


def prefixed_problems(errors: dict[int, ConfigError], n_jobs: int) -> ConfigError:
    """One ConfigError for the whole sweep: a problem shared by every job once, others naming their jobs."""
    seen: dict[tuple[str, str, str, str], tuple[Problem, list[int]]] = {}
    for num in sorted(errors):
        for p in errors[num].problems:
            seen.setdefault((p.key, repr(p.value), p.rule, p.fix), (p, []))[1].append(num)
    out = []
    for p, nums in seen.values():
        if len(nums) == n_jobs:
            out.append(p)
        else:
            where = ", ".join(map(str, nums))
            out.append(dataclasses.replace(p, key=f"sweep job{'s' if len(nums) > 1 else ''} {where}: {p.key}"))
    return ConfigError(out)
