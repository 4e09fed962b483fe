"""The plan as a text table and as JSON."""

from __future__ import annotations

import json

import pytest

from hpc_ft.sched import Budget, SweepJob, mmc, plan_json, plan_sweep, plan_table


def plan(wait=None):
    jobs = [SweepJob("lr1e-5", 2, 1.0, submit_order=0, overrides=["optim.lr=1e-5", "precision=bf16"]),
            SweepJob("lr3e-5", 2, 3.0, priority=2, submit_order=1, overrides=["optim.lr=3e-5", "precision=bf16"])]
    return plan_sweep(jobs, Budget(gpus=2, gpu_hours=10.0, price_per_gpu_hour=2.5), "equal", "priority", wait=wait)


def test_table_shows_summary_rows_and_assumptions():
    text = plan_table(plan(wait=mmc(2.0, 1.0, 3)))
    lines = text.splitlines()
    assert lines[0] == "sweep plan: 2 jobs, policy=equal, order=priority, array parallelism 1"
    assert "budget: 2 GPUs at once, 10 GPU-hours, money - at 2.5 per GPU-hour" in text
    # Priority order: lr3e-5 (3 h) then lr1e-5 (1 h), one at a time on 2 GPUs: makespan 4 h, 8 GPU-h, cost 20.
    assert "predicted: makespan 4.000 h (lower bound 4.000 h), utilization 100.0%, 8.000 GPU-hours, cost 20.00" in text
    assert "wait before start: 0.444 h expected (M/M/c, c=3, rho=0.667, P(wait)=0.444)" in text
    header = next(i for i, ln in enumerate(lines) if ln.startswith("#"))
    assert lines[header].split() == ["#", "job", "gpus", "start_h", "end_h", "hours", "priority", "overrides"]
    assert lines[header + 2].split() == ["0", "lr3e-5", "2", "0.000", "3.000", "3.000", "2", "optim.lr=3e-5",
                                         "precision=bf16"]
    assert lines[header + 3].split()[:5] == ["1", "lr1e-5", "2", "3.000", "4.000"]
    assert "assumptions:" in lines and any("Amdahl" in ln for ln in lines)
    assert any(ln.startswith("  - wait: M/M/c") for ln in lines)


def test_unstable_wait_renders_and_serializes():
    p = plan(wait=mmc(3.0, 1.0, 2))
    assert "wait before start: unbounded" in plan_table(p)
    assert json.loads(plan_json(p))["wait"]["wq_h"] is None


def test_json_round_trips_the_numbers():
    p = plan()
    d = json.loads(plan_json(p))
    assert d["order"] == ["lr3e-5", "lr1e-5"]
    assert d["makespan_h"] == pytest.approx(4.0) and d["cost"] == pytest.approx(20.0)
    assert d["budget"] == {"gpus": 2, "gpu_hours": 10.0, "money": None, "price_per_gpu_hour": 2.5, "unit": "GPU"}
    assert d["arrays"] == {"2": ["lr3e-5", "lr1e-5"]}
    first = d["assignments"][0]
    assert (first["name"], first["gpus"], first["start_h"], first["end_h"], first["order_index"]) == \
        ("lr3e-5", 2, 0.0, 3.0, 0)
    assert first["overrides"] == ["optim.lr=3e-5", "precision=bf16"]


def test_a_budget_of_one_says_one_gpu_not_gpus():
    jobs = [SweepJob("a", 1, 1.0, submit_order=0, overrides=["optim.lr=1e-5"])]
    text = plan_table(plan_sweep(jobs, Budget(gpus=1, gpu_hours=10.0, price_per_gpu_hour=2.5), "equal", "fcfs"))
    assert "budget: 1 GPU at once," in text
