"""Orders (fcfs, sjf, priority) and the list schedule against hand-solved timelines."""

from __future__ import annotations

import pytest

from hpc_ft.sched import Budget, SweepJob, plan_sweep


def three_jobs():
    # One GPU each on a 2-GPU budget: A 3 h, B 1 h, C 2 h (priority 5), submitted A, B, C.
    return [SweepJob("A", 1, 3.0, priority=1, submit_order=0), SweepJob("B", 1, 1.0, priority=1, submit_order=1),
            SweepJob("C", 1, 2.0, priority=5, submit_order=2)]


def timeline(plan):
    return [(a.job.name, a.start_h, a.end_h) for a in plan.assignments]


def test_fcfs():
    plan = plan_sweep(three_jobs(), Budget(gpus=2), "equal", "fcfs")
    # A and B start at 0; B ends at 1 and frees a GPU for C: 1-3. Makespan 3, 6 GPU-h / (2 * 3) = 100%.
    assert timeline(plan) == [("A", 0.0, 3.0), ("B", 0.0, 1.0), ("C", 1.0, 3.0)]
    assert plan.order == ["A", "B", "C"]
    assert plan.makespan_h == pytest.approx(3.0)
    assert plan.utilization == pytest.approx(1.0)


def test_sjf():
    plan = plan_sweep(three_jobs(), Budget(gpus=2), "equal", "sjf")
    # Shortest first: B (1 h), C (2 h), A (3 h). B 0-1, C 0-2, A waits for B: 1-4. Makespan 4, 6/(2*4) = 75%.
    assert timeline(plan) == [("B", 0.0, 1.0), ("C", 0.0, 2.0), ("A", 1.0, 4.0)]
    assert plan.makespan_h == pytest.approx(4.0)
    assert plan.utilization == pytest.approx(0.75)


def test_priority_order_ties_fall_back_to_submission():
    plan = plan_sweep(three_jobs(), Budget(gpus=2), "equal", "priority")
    # C (priority 5) first, then A and B (priority 1, in submission order). C 0-2, A 0-3, B 2-3.
    assert timeline(plan) == [("C", 0.0, 2.0), ("A", 0.0, 3.0), ("B", 2.0, 3.0)]
    assert plan.makespan_h == pytest.approx(3.0)


def test_array_parallelism_limits_jobs_at_once():
    jobs = [SweepJob(f"j{i}", 1, 1.0, submit_order=i) for i in range(4)]
    plan = plan_sweep(jobs, Budget(gpus=8), "equal", array_parallelism=2)
    # 4 one-hour, 1-GPU jobs, 2 at a time (8 // 2 = 4 GPUs each, but max_gpus = the request = 1): 0-1, 0-1, 1-2, 1-2.
    assert [(a.start_h, a.end_h) for a in plan.assignments] == [(0.0, 1.0), (0.0, 1.0), (1.0, 2.0), (1.0, 2.0)]
    assert plan.array_parallelism == 2
    assert plan.utilization == pytest.approx(4 / (8 * 2.0))
    # No limit: all four at once; the parallelism that reproduces it is 4.
    free = plan_sweep(jobs, Budget(gpus=8), "equal")
    assert free.makespan_h == pytest.approx(1.0)
    assert free.array_parallelism == 4


def test_no_job_overtakes_an_earlier_one():
    jobs = [SweepJob("A", 3, 2.0, submit_order=0), SweepJob("B", 2, 1.0, submit_order=1),
            SweepJob("C", 1, 1.0, submit_order=2)]
    plan = plan_sweep(jobs, Budget(gpus=4), "equal")
    # A takes 3 of 4 GPUs 0-2. B needs 2: waits for A, 2-3. C would fit in the free GPU at 0 but starts
    # after B (as the tasks of an array start in order): 2-3.
    assert timeline(plan) == [("A", 0.0, 2.0), ("B", 2.0, 3.0), ("C", 2.0, 3.0)]
    assert any("distinct GPU counts" in a for a in plan.assumptions)
