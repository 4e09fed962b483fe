"""What a search may start: GPUs at once, GPU-hours and money (sched.*), never exceeded. Pure.

Units are the sweep planner's (as ``hpc_ft.sweep.plan.job_units`` counts them): a trial's GPUs, or one per node
for a CPU-only trial, priced at telemetry.price_per_gpu_hour (per_node_hour for CPU). A trial is started only when the budget left can
pay for it at its planned size: its units for its planned hours (sched.est_duration_h, else its time limit
resources.timeout_min, which the scheduler enforces). A running trial holds the larger of its planned and its
elapsed unit-hours; a finished one what its node reports measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hpc_ft.config.schema import JobConf


def job_units(conf: JobConf) -> int:
    """What a trial holds in the budget's units: its GPUs, or one per node for a CPU job (the sweep planner's
    count; ``hpc_ft.sweep`` shares this layer, so it is not imported from there)."""
    r = conf.resources
    return r.nodes * r.gpus_per_node if r.gpus_per_node > 0 else r.nodes


@dataclass(frozen=True)
class TuneBudget:
    """The search's limits: ``unit_hours`` (GPU- or node-hours, from budget_gpu_hours and budget_money) and
    ``units_at_once`` (budget_gpus); None: no limit."""

    unit_hours: float | None
    units_at_once: int | None
    unit: str  # "GPU" or "node"

    @classmethod
    def of(cls, conf: JobConf) -> "TuneBudget":
        s, tel = conf.sched, conf.telemetry
        cpu = conf.resources.gpus_per_node == 0
        price = tel.price_per_node_hour if cpu else tel.price_per_gpu_hour
        limits = [h for h in (s.budget_gpu_hours, None if s.budget_money is None or price <= 0
                              else s.budget_money / price) if h is not None]
        return cls(unit_hours=min(limits) if limits else None, units_at_once=s.budget_gpus,
                   unit="node" if cpu else "GPU")


@dataclass(frozen=True)
class TrialSize:
    """One trial's planned size: ``units`` held for ``planned_h`` hours at most."""

    units: int
    planned_h: float

    @classmethod
    def of(cls, conf: JobConf) -> "TrialSize":
        hours = conf.sched.est_duration_h or conf.resources.timeout_min / 60.0
        return cls(units=job_units(conf), planned_h=hours)

    @property
    def unit_hours(self) -> float:
        return self.units * self.planned_h


def parallelism(conf: JobConf, size: TrialSize) -> int:
    """Trials at once: tune.parallelism, else as many as sched.budget_gpus holds, else 1; never above what
    sched.budget_gpus holds (refused by ``budget_problems`` when not even one fits)."""
    fits = None if conf.sched.budget_gpus is None else conf.sched.budget_gpus // size.units
    want = conf.tune.parallelism or fits or 1
    return max(1, min(want, fits) if fits is not None else want)


def may_start(budget: TuneBudget, size: TrialSize, spent_h: float, held_h: float) -> bool:
    """Whether one more trial of ``size`` fits: finished trials' ``spent_h`` plus running trials' ``held_h``
    plus its planned unit-hours within the budget (always, without a unit-hours limit)."""
    if budget.unit_hours is None:
        return True
    return spent_h + held_h + size.unit_hours <= budget.unit_hours * (1 + 1e-9)


def held_unit_hours(size: TrialSize, elapsed_s: float) -> float:
    """What a running trial holds: its planned unit-hours, or its elapsed ones if it has run longer."""
    return size.units * max(size.planned_h, elapsed_s / 3600.0)


def trials_affordable(budget: TuneBudget, size: TrialSize) -> int | None:
    """How many trials of ``size`` the unit-hours budget pays for at their planned size (None: no limit)."""
    if budget.unit_hours is None:
        return None
    return int(math.floor(budget.unit_hours / size.unit_hours * (1 + 1e-9)))
