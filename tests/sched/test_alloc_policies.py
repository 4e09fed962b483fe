"""Allocation policies against hand-solved cases (the arithmetic is in the comments)."""

from __future__ import annotations

import pytest

from hpc_ft.sched import Budget, SweepJob, allocate, plan_sweep


def job(name, gpus=1, hours=1.0, prio=1.0, order=0, lo=1, hi=4, p=1.0):
    return SweepJob(name, gpus, hours, priority=prio, submit_order=order, min_gpus=lo, max_gpus=hi,
                    parallel_fraction=p)


def test_equal_splits_the_budget_among_the_jobs_running_at_once():
    jobs = [job("a", order=0), job("b", order=1), job("c", order=2)]
    # k = min(3 jobs, no parallelism limit) = 3; 8 // 3 = 2 GPUs each (2 GPUs stay free).
    assert allocate(jobs, Budget(gpus=8), "equal").gpus == {"a": 2, "b": 2, "c": 2}
    # k = min(3, parallelism 2) = 2; 8 // 2 = 4 each, within max_gpus=4.
    assert allocate(jobs, Budget(gpus=8), "equal", parallelism=2).gpus == {"a": 4, "b": 4, "c": 4}
    # 16 // 2 = 8, clamped to each job's max_gpus=4.
    assert allocate(jobs, Budget(gpus=16), "equal", parallelism=2).gpus == {"a": 4, "b": 4, "c": 4}
    # 100 jobs on 8 GPUs: 8 // 100 = 0, raised to min_gpus=1.
    many = [job(f"j{i}", order=i) for i in range(100)]
    assert set(allocate(many, Budget(gpus=8), "equal").gpus.values()) == {1}


def test_without_a_gpu_budget_every_job_gets_its_request():
    jobs = [job("a", gpus=2), job("b", gpus=3)]
    for policy in ("equal", "priority", "proportional"):
        assert allocate(jobs, Budget(), policy).gpus == {"a": 2, "b": 3}, policy


def test_priority_gives_the_remaining_gpus_to_higher_priority_first():
    jobs = [job("j0", prio=1, order=0), job("j1", prio=3, order=1), job("j2", prio=2, order=2),
            job("j3", prio=3, order=3)]
    # k = 2 (parallelism). Ranked by (-priority, submit_order): j1, j3, j2, j0 -> groups [j1, j3], [j2, j0].
    # Group 1: minimums 1 + 1 = 2 of 6, 4 left; j1 takes +3 (to its max 4), j3 takes the last +1 -> 2.
    # Group 2: the same arithmetic: j2 -> 4, j0 -> 2.
    got = allocate(jobs, Budget(gpus=6), "priority", parallelism=2).gpus
    assert got == {"j0": 2, "j1": 4, "j2": 4, "j3": 2}


def test_proportional_follows_each_jobs_work_and_evens_out_durations():
    jobs = [job("a", hours=3.0, hi=8, order=0), job("b", hours=1.0, hi=8, order=1)]
    # Work (GPU-hours at the request of 1 GPU): a 3, b 1, mean 2; k = 2.
    # a: 8 * 3 / (2 * 2) = 6 GPUs; b: 8 * 1 / (2 * 2) = 2 GPUs.
    assert allocate(jobs, Budget(gpus=8), "proportional").gpus == {"a": 6, "b": 2}
    plan = plan_sweep(jobs, Budget(gpus=8), "proportional")
    # Linear scaling: a takes 3 h * 1/6 = 0.5 h, b takes 1 h * 1/2 = 0.5 h, side by side on 6 + 2 = 8 GPUs.
    assert [a.duration_h for a in plan.assignments] == pytest.approx([0.5, 0.5])
    assert plan.makespan_h == pytest.approx(0.5)
    assert plan.utilization == pytest.approx(1.0)  # 4 GPU-hours / (8 GPUs * 0.5 h)


def test_equal_plan_numbers():
    jobs = [job("a", hours=2.0, order=0), job("b", hours=2.0, order=1), job("c", hours=2.0, order=2)]
    plan = plan_sweep(jobs, Budget(gpus=4, price_per_gpu_hour=3.0), "equal", array_parallelism=2)
    # k = 2: 4 // 2 = 2 GPUs each; linear scaling: 2 h at 1 GPU -> 1 h at 2 GPUs.
    # a, b run 0-1 h on 4 GPUs; c runs 1-2 h; makespan 2 h; 6 GPU-hours; cost 6 * 3 = 18.
    assert [(a.job.name, a.gpus, a.start_h, a.end_h) for a in plan.assignments] == [
        ("a", 2, 0.0, 1.0), ("b", 2, 0.0, 1.0), ("c", 2, 1.0, 2.0)]
    assert plan.makespan_h == pytest.approx(2.0)
    assert plan.gpu_hours == pytest.approx(6.0)
    assert plan.cost == pytest.approx(18.0)
    assert plan.utilization == pytest.approx(6.0 / (4 * 2.0))
    assert plan.array_parallelism == 2


def test_amdahl_scaling_model():
    j = SweepJob("a", 2, 3.0, parallel_fraction=0.5)
    # T(g) = 3 * (0.5 + 0.5/g) / (0.5 + 0.5/2) = 3 * (0.5 + 0.5/g) / 0.75
    assert j.duration_h(2) == pytest.approx(3.0)
    assert j.duration_h(1) == pytest.approx(4.0)  # 3 * 1.0 / 0.75
    assert j.duration_h(4) == pytest.approx(2.5)  # 3 * 0.625 / 0.75
    assert j.gpu_hours(4) == pytest.approx(10.0)
    assert SweepJob("b", 1, 8.0).duration_h(4) == pytest.approx(2.0)  # p = 1: linear
