"""plan_sweep: budgets refused with the smallest budget that fits, bad input, determinism, no torch."""

from __future__ import annotations

import dataclasses
import json
import random
import subprocess
import sys

import pytest

from hpc_ft.errors import ConfigError
from hpc_ft.sched import Budget, SweepJob, plan_json, plan_sweep


def fixed_jobs():
    # a: 2 GPUs for 5 h = 10 GPU-h; b: 1 GPU for 7.5 h = 7.5 GPU-h; the sweep needs 17.5 GPU-h.
    return [SweepJob("a", 2, 5.0, submit_order=0), SweepJob("b", 1, 7.5, submit_order=1)]


def test_gpu_hour_budget_too_small_names_the_smallest_that_fits():
    with pytest.raises(ConfigError) as exc:
        plan_sweep(fixed_jobs(), Budget(gpu_hours=12.0))
    text = str(exc.value)
    assert "sched.budget_gpu_hours=12.0" in text
    assert "the sweep needs at least 17.5 GPU-hours" in text
    assert "pass sched.budget_gpu_hours=17.5" in text
    assert plan_sweep(fixed_jobs(), Budget(gpu_hours=17.5)).gpu_hours == pytest.approx(17.5)  # and it fits


def test_gpu_budget_and_money_too_small_all_reported_at_once():
    with pytest.raises(ConfigError) as exc:
        plan_sweep(fixed_jobs(), Budget(gpus=1, money=30.0, price_per_gpu_hour=2.0))
    text = str(exc.value)
    assert "sched.budget_gpus=1" in text and "job 'a' needs at least 2 GPUs" in text
    assert "pass sched.budget_gpus=2" in text
    # 17.5 GPU-h at 2 per GPU-hour = 35.
    assert "sched.budget_money=30.0" in text and "pass sched.budget_money=35.0" in text
    plan = plan_sweep(fixed_jobs(), Budget(gpus=2, money=35.0, price_per_gpu_hour=2.0))
    assert plan.cost == pytest.approx(35.0)


def test_policy_that_overspends_is_refused_and_lp_fits():
    jobs = [SweepJob(n, 1, 4.0, submit_order=i, min_gpus=1, max_gpus=2, parallel_fraction=0.5)
            for i, n in enumerate("ab")]
    # equal: 4 GPUs // 2 jobs = 2 each; Amdahl p = 0.5: 3 h * 2 GPUs = 6 GPU-h each, 12 in all > 10.
    with pytest.raises(ConfigError) as exc:
        plan_sweep(jobs, Budget(gpus=4, gpu_hours=10.0), "equal")
    text = str(exc.value)
    assert "policy=equal, whose allocation needs 12.0 GPU-hours" in text
    assert "fits in 8.0 GPU-hours" in text and "sched.policy=lp" in text
    assert plan_sweep(jobs, Budget(gpus=4, gpu_hours=10.0), "lp").gpu_hours <= 10.0


def test_bad_input_is_refused_all_at_once():
    jobs = [SweepJob("a", 0, -1.0, min_gpus=3, max_gpus=2, parallel_fraction=2.0), SweepJob("a", 1, 1.0)]
    with pytest.raises(ConfigError) as exc:
        plan_sweep(jobs, Budget(gpus=0, gpu_hours=-1, price_per_gpu_hour=0), "fair", "lifo",
                   array_parallelism=0, objective="speed")
    text = str(exc.value)
    for expected in ("sched.policy='fair'", "sched.order='lifo'", "sched.objective='speed'",
                     "sched.array_parallelism=0", "sched.budget_gpus=0", "sched.budget_gpu_hours=-1",
                     "telemetry.price_per_gpu_hour=0", "sweep[a].gpus=0", "sweep[a].min_gpus..max_gpus='3..2'",
                     "sweep[a].est_duration_h=-1.0", "sweep[a].parallel_fraction=2.0", "sweep[a].name='a'"):
        assert expected in text, expected


def sweep(seed=3, n=40):
    rng = random.Random(seed)
    return [SweepJob(f"p{i}", rng.choice([1, 2]), rng.uniform(0.5, 4), priority=rng.choice([1, 2]),
                     submit_order=i, min_gpus=1, max_gpus=4, parallel_fraction=0.9,
                     overrides=[f"optim.lr={i}e-6"]) for i in range(n)]


@pytest.mark.parametrize("policy", ["equal", "priority", "proportional", "lp"])
def test_plans_are_deterministic_and_ignore_input_order(policy):
    jobs = sweep()
    budget = Budget(gpus=8, gpu_hours=500.0)
    first = plan_json(plan_sweep(jobs, budget, policy, "sjf", array_parallelism=4))
    assert plan_json(plan_sweep(jobs, budget, policy, "sjf", array_parallelism=4)) == first
    shuffled = jobs[:]
    random.Random(7).shuffle(shuffled)
    assert plan_json(plan_sweep(shuffled, budget, policy, "sjf", array_parallelism=4)) == first


def test_planning_imports_neither_torch_nor_scipy_for_simple_policies():
    code = ("import sys; from hpc_ft.sched import Budget, SweepJob, plan_sweep, plan_table;"
            "plan_table(plan_sweep([SweepJob('a', 1, 1.0)], Budget(gpus=2)));"
            "print(sorted(m for m in ('torch', 'scipy', 'pynvml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_frozen_jobs():
    with pytest.raises(dataclasses.FrozenInstanceError):
        fixed_jobs()[0].gpus = 3  # type: ignore[misc]
    assert json.loads(plan_json(plan_sweep(fixed_jobs(), Budget())))["order"] == ["a", "b"]
