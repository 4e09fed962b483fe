"""The discrete-event simulation agrees with the planner's predictions.

Tolerances: with the planned durations, 1e-9 relative (the same arithmetic in a different loop). With every
duration scaled by uniform [1 - e, 1 + e], the simulated makespan lies within [1 - e, 1 + e] times the plan's
(see hpc_ft.sched.simulate for why).
"""

from __future__ import annotations

import random

import pytest

from hpc_ft.sched import Budget, SweepJob, plan_sweep, simulate
from hpc_ft.sched.simulate import simulate_tasks

POLICIES = ("equal", "priority", "proportional", "lp")
ORDERS = ("fcfs", "sjf", "priority")


def mixed_jobs(seed: int, n: int = 14) -> list[SweepJob]:
    rng = random.Random(seed)
    return [SweepJob(f"j{i}", rng.choice([1, 2, 4]), rng.uniform(0.2, 5.0), priority=rng.choice([1, 2, 3]),
                     submit_order=i, min_gpus=1, max_gpus=rng.choice([2, 4, 8]),
                     parallel_fraction=rng.choice([1.0, 0.9])) for i in range(n)]


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("par", [None, 3])
def test_simulation_matches_the_plan(policy, order, par):
    plan = plan_sweep(mixed_jobs(1), Budget(gpus=8), policy, order, array_parallelism=par)
    sim = simulate(plan)
    assert sim.makespan_h == pytest.approx(plan.makespan_h, rel=1e-9)
    assert sim.utilization == pytest.approx(plan.utilization, rel=1e-9)
    for a in plan.assignments:
        assert sim.start_h[a.job.name] == pytest.approx(a.start_h, rel=1e-9, abs=1e-12)
        assert sim.end_h[a.job.name] == pytest.approx(a.end_h, rel=1e-9)
    assert sim.peak_jobs <= plan.array_parallelism
    assert sim.peak_gpus <= 8


@pytest.mark.parametrize("seed", range(5))
def test_noisy_durations_stay_within_the_stated_band(seed):
    plan = plan_sweep(mixed_jobs(seed), Budget(gpus=8), "lp", "sjf", array_parallelism=4)
    e = 0.1
    sim = simulate(plan, duration_noise=e, seed=seed)
    assert (1 - e) * plan.makespan_h <= sim.makespan_h <= (1 + e) * plan.makespan_h
    assert sim.makespan_h != plan.makespan_h  # the noise did change something
    assert simulate(plan, duration_noise=e, seed=seed) == sim  # seeded: repeatable


def test_simulation_enforces_the_limits_independently():
    # 4 one-hour 1-GPU tasks. Parallelism 2 -> two waves; a GPU budget of 3 with 2-GPU tasks -> one at a time.
    tasks = [(f"t{i}", 1, 1.0) for i in range(4)]
    assert simulate_tasks(tasks, 8, 2).makespan_h == pytest.approx(2.0)
    assert simulate_tasks(tasks, 8, None).makespan_h == pytest.approx(1.0)
    wide = [(f"w{i}", 2, 1.0) for i in range(3)]
    res = simulate_tasks(wide, 3, None)
    assert res.makespan_h == pytest.approx(3.0)
    assert res.peak_gpus == 2
    assert res.utilization == pytest.approx(6 / (3 * 3.0))
    with pytest.raises(ValueError, match="more than the budget"):
        simulate_tasks([("big", 4, 1.0)], 3, None)
