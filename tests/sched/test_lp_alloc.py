"""LP allocation against hand-solved cases, and the LP optimum as a lower bound on every policy's plan."""

from __future__ import annotations

import random

import pytest

from hpc_ft.sched import Budget, SweepJob, plan_sweep
from hpc_ft.sched.lp import allocate_lp


def two_half_parallel_jobs():
    # 1-GPU duration 4 h, Amdahl p = 0.5, 1..2 GPUs:
    #   d(1) = 4 * (0.5 + 0.5) = 4 h, a(1) = 4 GPU-h;  d(2) = 4 * (0.5 + 0.25) = 3 h, a(2) = 6 GPU-h.
    return [SweepJob(n, 1, 4.0, submit_order=i, min_gpus=1, max_gpus=2, parallel_fraction=0.5)
            for i, n in enumerate("ab")]


def test_lp_makespan_hand_solved():
    # min T: each d_j >= 3 h, so T >= 3; both on 2 GPUs: area 12 <= 4 GPUs * 3 h, d = 3 <= 3. T* = 3.
    plan = plan_sweep(two_half_parallel_jobs(), Budget(gpus=4), "lp", objective="makespan")
    assert plan.gpus_by_job() == {"a": 2, "b": 2}
    assert plan.makespan_h == pytest.approx(3.0)
    assert plan.gpu_hours == pytest.approx(12.0)
    assert plan.utilization == pytest.approx(1.0)
    assert plan.lower_bound_h == pytest.approx(3.0)


def test_lp_throughput_hand_solved():
    # Fewest GPU-hours: a(1) = 4 < a(2) = 6, so 1 GPU each: 8 GPU-h, both run 0-4 h on 2 of 4 GPUs.
    plan = plan_sweep(two_half_parallel_jobs(), Budget(gpus=4), "lp", objective="throughput")
    assert plan.gpus_by_job() == {"a": 1, "b": 1}
    assert plan.makespan_h == pytest.approx(4.0)
    assert plan.gpu_hours == pytest.approx(8.0)
    assert plan.utilization == pytest.approx(8.0 / (4 * 4.0))


def test_lp_under_a_gpu_hour_budget_hand_solved():
    # y_j = fraction of job j on 2 GPUs. GPU-h: (4 + 2 y_a) + (4 + 2 y_b) <= 10  ->  y_a + y_b <= 1.
    # d_j = 4 - y_j <= T; minimizing T gives y_a = y_b = 0.5, T* = 3.5 (both jobs split: fractional).
    alloc = allocate_lp(two_half_parallel_jobs(), Budget(gpus=4, gpu_hours=10.0), None, "makespan")
    assert alloc.lower_bound_h == pytest.approx(3.5)
    # Rounding up (2, 2) needs 12 GPU-h > 10: the first split job goes back down -> (1, 2), 10 GPU-h.
    # Rounding down: (1, 1), 8 GPU-h.
    assert alloc.alternatives == [{"a": 1, "b": 2}, {"a": 1, "b": 1}]
    plan = plan_sweep(two_half_parallel_jobs(), Budget(gpus=4, gpu_hours=10.0), "lp", objective="makespan")
    # Both list-schedule to 4 h (the 1-GPU job takes 4 h); ties go to fewer GPU-hours: (1, 1), 8 GPU-h.
    assert plan.gpus_by_job() == {"a": 1, "b": 1}
    assert plan.makespan_h == pytest.approx(4.0)
    assert plan.gpu_hours == pytest.approx(8.0)
    assert plan.lower_bound_h == pytest.approx(3.5)


def test_lp_rounding_keeps_the_better_list_schedule():
    jobs = [SweepJob("a", 1, 8.0, submit_order=0, min_gpus=1, max_gpus=4),
            SweepJob("b", 1, 2.0, submit_order=1, min_gpus=1, max_gpus=4)]
    # Linear scaling: area 8 + 2 = 10 GPU-h on 4 GPUs -> T >= 2.5. a needs 8/g <= 2.5: split between
    # 3 GPUs (2.667 h) and 4 GPUs (2 h) with 1/4 on 4; b fits on 1 GPU (2 h). T* = 2.5.
    alloc = allocate_lp(jobs, Budget(gpus=4), None, "makespan")
    assert alloc.lower_bound_h == pytest.approx(2.5)
    assert alloc.alternatives == [{"a": 4, "b": 1}, {"a": 3, "b": 1}]
    # Up: a on 4 GPUs 0-2 h, b waits for it, 2-4 h -> 4 h. Down: a on 3 GPUs 0-2.667 h, b 0-2 h -> 2.667 h.
    # Widening the job that ends last (b, after a on 4 GPUs) on 2, 3, 4 GPUs: b ends at 3, 2.667, 2.5 h.
    plan = plan_sweep(jobs, Budget(gpus=4), "lp")
    assert plan.gpus_by_job() == {"a": 4, "b": 4}
    assert plan.makespan_h == pytest.approx(2.5)  # = T*: no schedule ends sooner
    assert plan.utilization == pytest.approx(1.0)
    # Equal at 4 GPUs per job (one at a time) plans the same and comes first among the candidates.
    assert "kept policy=equal at 4 GPUs per job (2.500 h)" in plan.assumptions[-1]


def test_lp_without_gpu_budget_gives_the_tail_job_its_most():
    # No GPU budget: T* = the longest job on its most GPUs = 8 h / 4 = 2 h; b already fits in 2 h on 1 GPU,
    # so the least-GPU-hours rule keeps it on 1.
    jobs = [SweepJob("a", 1, 8.0, submit_order=0, min_gpus=1, max_gpus=4, parallel_fraction=0.9),
            SweepJob("b", 1, 2.0, submit_order=1, min_gpus=1, max_gpus=4, parallel_fraction=0.9)]
    plan = plan_sweep(jobs, Budget(), "lp")
    assert plan.gpus_by_job() == {"a": 4, "b": 1}
    assert plan.makespan_h == pytest.approx(jobs[0].duration_h(4))


@pytest.mark.parametrize("seed", range(12))
def test_lp_optimum_bounds_every_policys_plan(seed):
    rng = random.Random(seed)
    jobs = [SweepJob(f"j{i}", rng.choice([1, 2]), rng.uniform(0.5, 6.0), priority=rng.choice([1, 2, 3]),
                     submit_order=i, min_gpus=1, max_gpus=rng.choice([2, 4, 8]),
                     parallel_fraction=rng.choice([1.0, 0.95, 0.7])) for i in range(rng.randint(2, 9))]
    budget = Budget(gpus=rng.choice([4, 8, 16]))
    par = rng.choice([None, 2, 3])
    t_star = allocate_lp(jobs, budget, par, "makespan").lower_bound_h
    for policy in ("equal", "priority", "proportional", "lp"):
        for order in ("fcfs", "sjf", "priority"):
            plan = plan_sweep(jobs, budget, policy, order, array_parallelism=par)
            assert plan.makespan_h >= t_star * (1 - 1e-9), (policy, order)
            assert plan.lower_bound_h <= plan.makespan_h * (1 + 1e-9)
