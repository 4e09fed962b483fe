"""Data of sweep planning: jobs, allocations, budgets, queue estimates and plans. Pure; no scipy, no torch.

Scaling model (the one place it is defined): Amdahl's law per job. With parallel fraction ``p``, a job
that takes ``est_duration_h`` on its reference ``gpus`` takes on ``g`` GPUs

    duration_h(g) = est_duration_h * ((1 - p) + p / g) / ((1 - p) + p / gpus)

``p = 1`` is perfectly linear scaling (GPU-hours do not depend on ``g``); ``p < 1`` makes every extra GPU
cost GPU-hours. GPU-hours ``g * duration_h(g)`` never decrease with ``g`` and duration never increases.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class SweepJob:
    """One point of a sweep: its GPU request (fixed or a range), estimated duration and priority."""

    name: str
    gpus: int  # reference request: nodes * gpus_per_node; est_duration_h is measured at this count
    est_duration_h: float  # wall time on `gpus` GPUs
    priority: float = 1.0  # larger runs first under order=priority and gets GPUs first under policy=priority
    submit_order: int = 0  # position in the sweep as the user wrote it (fcfs order, tie-breaker everywhere)
    overrides: list[str] = field(default_factory=list)  # the Hydra overrides of this point
    min_gpus: int | None = None  # smallest count the planner may give (None: gpus)
    max_gpus: int | None = None  # largest count the planner may give (None: gpus)
    parallel_fraction: float = 1.0  # Amdahl's p: 1.0 scales linearly, 0.0 gains nothing from more GPUs

    @property
    def lo_gpus(self) -> int:
        return self.gpus if self.min_gpus is None else self.min_gpus

    @property
    def hi_gpus(self) -> int:
        return self.gpus if self.max_gpus is None else self.max_gpus

    def gpu_counts(self, cap: int | None = None) -> range:
        """Valid GPU counts for this job (integers in [lo, hi], at most ``cap``)."""
        hi = self.hi_gpus if cap is None else min(self.hi_gpus, cap)
        return range(self.lo_gpus, hi + 1)

    def clamp(self, gpus: int) -> int:
        return max(self.lo_gpus, min(self.hi_gpus, gpus))

    def duration_h(self, gpus: int) -> float:
        """Wall hours on ``gpus`` GPUs under the Amdahl model of this module's docstring."""
        p = self.parallel_fraction
        return self.est_duration_h * ((1.0 - p) + p / gpus) / ((1.0 - p) + p / self.gpus)

    def gpu_hours(self, gpus: int) -> float:
        return gpus * self.duration_h(gpus)


@dataclass(frozen=True)
class Allocation:
    """GPUs per job as an allocation policy (hpc_ft.sched.allocate, hpc_ft.sched.lp) decided them."""

    gpus: dict[str, int]  # job name -> GPUs
    notes: list[str] = field(default_factory=list)  # how the policy decided, for the plan's assumptions
    lower_bound_h: float | None = None  # the LP's optimal fluid makespan, when the LP ran
    alternatives: list[dict[str, int]] = field(default_factory=list)  # candidates (lp); the planner picks one
    labels: list[str] = field(default_factory=list)  # what each alternative is, for the plan's assumptions


@dataclass(frozen=True)
class Budget:
    """What the sweep may use: GPUs at once, GPU-hours in total, money in total (None: unlimited)."""

    gpus: int | None = None
    gpu_hours: float | None = None
    money: float | None = None
    price_per_gpu_hour: float = 2.0  # currency units per GPU-hour, as telemetry.price_per_gpu_hour

    @property
    def gpu_hours_cap(self) -> float | None:
        """The tighter of the GPU-hour budget and what the money buys (None: no limit)."""
        caps = [c for c in (self.gpu_hours, None if self.money is None else self.money / self.price_per_gpu_hour)
                if c is not None]
        return min(caps) if caps else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class QueueEstimate:
    """Expected wait before a job starts under an M/M/c queue, with the assumptions that produced it."""

    wq_h: float  # expected wait in queue (math.inf when unstable)
    p_wait: float  # probability that an arriving job waits at all (Erlang C)
    rho: float  # utilization per server, lambda / (c * mu)
    c: int  # servers
    lambda_per_h: float  # arrival rate
    mu_per_h: float  # service rate of one server
    assumptions: list[str] = field(default_factory=list)
    stable: bool = True  # False when rho >= 1: the queue grows without bound
    observed_wq_h: float | None = None  # mean wait seen in the history, when estimated from one

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["wq_h"] = self.wq_h if math.isfinite(self.wq_h) else None  # JSON has no infinity
        return d


@dataclass(frozen=True)
class Assignment:
    """One job placed in the plan: its GPUs and predicted start and end (hours from the first start)."""

    job: SweepJob
    gpus: int
    start_h: float
    end_h: float
    order_index: int  # position in the submission order (the array task index)

    @property
    def duration_h(self) -> float:
        return self.end_h - self.start_h

    @property
    def gpu_hours(self) -> float:
        return self.gpus * self.duration_h

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.job.name, "gpus": self.gpus, "start_h": self.start_h, "end_h": self.end_h,
                "duration_h": self.duration_h, "gpu_hours": self.gpu_hours, "order_index": self.order_index,
                "priority": self.job.priority, "submit_order": self.job.submit_order,
                "overrides": list(self.job.overrides)}


@dataclass(frozen=True)
class Plan:
    """A sweep plan: GPUs per job, submission order, parallelism and the predicted outcome."""

    assignments: list[Assignment]  # in submission order
    order: list[str]  # job names in submission order
    array_parallelism: int  # the %N of the Slurm array that reproduces this schedule
    makespan_h: float  # first start to last end
    utilization: float  # GPU-hours used / (GPU capacity * makespan); capacity: budget.gpus or peak in use
    gpu_hours: float
    cost: float  # gpu_hours * budget.price_per_gpu_hour
    policy: str
    order_policy: str
    objective: str | None = None  # lp only: throughput | makespan
    budget: Budget = field(default_factory=Budget)
    wait: QueueEstimate | None = None
    lower_bound_h: float = 0.0  # fluid bound: no schedule on these GPU counts (lp: on any counts) ends sooner
    assumptions: list[str] = field(default_factory=list)
    # What the gpus columns, hours and price count: "GPU", or "node" for a sweep of CPU-only jobs.
    unit: str = "GPU"

    def gpus_by_job(self) -> dict[str, int]:
        return {a.job.name: a.gpus for a in self.assignments}

    def arrays(self) -> dict[int, list[str]]:
        """Job names grouped by GPU count: one Slurm array per group (array tasks share one resource request)."""
        groups: dict[int, list[str]] = {}
        for a in self.assignments:
            groups.setdefault(a.gpus, []).append(a.job.name)
        return dict(sorted(groups.items()))

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy, "order_policy": self.order_policy, "objective": self.objective,
                "array_parallelism": self.array_parallelism, "makespan_h": self.makespan_h,
                "lower_bound_h": self.lower_bound_h, "utilization": self.utilization,
                "gpu_hours": self.gpu_hours, "cost": self.cost, "unit": self.unit,
                # The budget's keys keep their GPU names (readers use them); "unit" says what they count: for
                # a CPU-only sweep, gpus are nodes and price_per_gpu_hour is the node-hour price.
                "budget": {**self.budget.to_dict(), "unit": self.unit},
                "wait": None if self.wait is None else self.wait.to_dict(),
                "order": list(self.order), "assignments": [a.to_dict() for a in self.assignments],
                "arrays": {str(g): names for g, names in self.arrays().items()},
                "assumptions": list(self.assumptions)}


def jobs_from_points(points: list[list[str]], *, gpus: int, est_duration_h: float = 0.0,
                     min_gpus: int | None = None, max_gpus: int | None = None, parallel_fraction: float = 1.0,
                     priorities: list[float] | None = None) -> list[SweepJob]:
    """One SweepJob per sweep point (its overrides), named by its index as Hydra numbers sweep jobs.

    ``est_duration_h=0`` leaves the duration to hpc_ft.sched.durations.estimate_durations.
    """
    return [SweepJob(name=str(i), gpus=gpus, est_duration_h=est_duration_h,
                     priority=1.0 if priorities is None else priorities[i], submit_order=i, overrides=list(pt),
                     min_gpus=min_gpus, max_gpus=max_gpus, parallel_fraction=parallel_fraction)
            for i, pt in enumerate(points)]
