"""Pure sweep planning: composed jobs -> SweepJobs -> plan; allocation overrides; one error for the sweep."""

import json

import pytest

from hpc_ft.config.schema import JobConf
from hpc_ft.errors import ConfigError, Problem
from hpc_ft.sweep.history import load_history, run_record
from hpc_ft.sweep.plan import (allocation_overrides, check_sweep_wide, job_units, plan_confs, prefixed_problems,
                               sweep_job, varying)


def conf(**sched):
    c = JobConf()
    c.resources.gpus_per_node = sched.pop("gpus_per_node", 0)
    c.resources.nodes = sched.pop("nodes", 1)
    for k, v in sched.items():
        setattr(c.sched, k, v)
    return c


def test_units_are_gpus_or_one_per_cpu_node():
    assert job_units(conf(gpus_per_node=4, nodes=2)) == 8
    assert job_units(conf(nodes=3)) == 3


def test_sweep_job_carries_priority_duration_and_range_of_one_node_gpu_jobs_only():
    j = sweep_job(conf(gpus_per_node=2, priority=3.0, est_duration_h=0.5, min_gpus=1, max_gpus=4), 7, ["a=1"])
    assert (j.name, j.gpus, j.priority, j.est_duration_h, j.lo_gpus, j.hi_gpus, j.submit_order) == \
        ("7", 2, 3.0, 0.5, 1, 4, 7)
    multi = sweep_job(conf(gpus_per_node=2, nodes=2, min_gpus=1, max_gpus=4), 0, [])
    assert (multi.lo_gpus, multi.hi_gpus) == (4, 4)


def test_varying_keeps_what_tells_points_apart():
    pts = [["a=1", "b=x", "c=0"], ["a=2", "b=x", "c=0"]]
    assert varying(pts) == [["a=1"], ["a=2"]]
    assert varying([["a=1"]]) == [["a=1"]]


def test_priority_order_and_parallelism_follow_the_sched_keys():
    confs = [conf(priority=p, order="priority", array_parallelism=2, est_duration_h=1.0) for p in (1, 3, 2, 4)]
    plan = plan_confs(confs, [[f"p={i}"] for i in range(4)])
    assert plan.order == ["3", "1", "2", "0"]
    assert plan.array_parallelism == 2


def test_sjf_uses_each_jobs_duration():
    confs = [conf(order="sjf", est_duration_h=h) for h in (0.4, 0.1, 0.3, 0.2)]
    assert plan_confs(confs, [[]] * 4).order == ["1", "3", "2", "0"]


def test_missing_duration_defaults_with_a_stated_assumption():
    plan = plan_confs([conf(), conf()], [["a=1"], ["a=2"]])
    assert plan.makespan_h == pytest.approx(1.0)
    assert any("1 h assumed" in a for a in plan.assumptions)
    assert any("CPU jobs" in a for a in plan.assumptions)


def test_budget_too_small_names_the_smallest_that_fits():
    with pytest.raises(ConfigError) as e:
        plan_confs([conf(gpus_per_node=4, budget_gpus=2, est_duration_h=1.0)], [[]])
    assert "sched.budget_gpus=4" in str(e.value)


def test_sweeping_a_sweep_wide_key_is_refused():
    with pytest.raises(ConfigError) as e:
        check_sweep_wide([conf(policy="equal"), conf(policy="lp")])
    assert "sched.policy" in str(e.value) and "cannot be swept" in str(e.value)


def test_allocation_overrides_only_for_jobs_whose_gpus_changed():
    confs = [conf(gpus_per_node=1, min_gpus=1, max_gpus=4, budget_gpus=8, est_duration_h=1.0) for _ in range(2)]
    plan = plan_confs(confs, [["a=1"], ["a=2"]])
    assert plan.gpus_by_job() == {"0": 4, "1": 4}
    assert allocation_overrides(plan, confs) == {0: ["resources.gpus_per_node=4"], 1: ["resources.gpus_per_node=4"]}
    fixed = [conf(gpus_per_node=2, budget_gpus=8, est_duration_h=1.0) for _ in range(2)]
    assert allocation_overrides(plan_confs(fixed, [[], []]), fixed) == {}


def test_problems_shared_by_every_job_appear_once_others_name_their_jobs():
    shared = Problem("optim.lr", -1, "must be positive", "pass optim.lr=3e-5")
    own = Problem("train.global_batch_size", 16, "must be a multiple of 6", "pass train.global_batch_size=12")
    err = prefixed_problems({0: ConfigError([shared]), 1: ConfigError([shared, own])}, n_jobs=2)
    assert [p.key for p in err.problems] == ["optim.lr", "sweep job 1: train.global_batch_size"]


def _run_dir(root, overrides, wall_s, exit_code=0, gpus=2):
    (root / "nodes").mkdir(parents=True)
    (root / "job.yaml").write_text(json.dumps({"conf": {"resources": {"nodes": 1, "gpus_per_node": gpus}},
                                               "overrides": overrides}))
    (root / "nodes" / "node_0.json").write_text(json.dumps({"wall_s": wall_s, "exit_code": exit_code}))


def test_history_from_run_dirs_gives_durations(tmp_path):
    _run_dir(tmp_path / "sw" / "0", ["optim.lr=1e-05"], 7200.0)
    _run_dir(tmp_path / "sw" / "1", ["optim.lr=3e-05"], 3600.0)
    _run_dir(tmp_path / "sw" / "2", ["optim.lr=1e-04"], 10.0, exit_code=1)
    hist = load_history([str(tmp_path / "sw")])
    assert run_record(tmp_path / "sw" / "0") == {"overrides": ["optim.lr=1e-05"], "wall_s": 7200.0, "gpus": 2,
                                                 "ok": True}
    confs = [conf(gpus_per_node=2, order="sjf"), conf(gpus_per_node=2, order="sjf")]
    plan = plan_confs(confs, [["optim.lr=1e-05"], ["optim.lr=3e-05"]], hist)
    assert plan.order == ["1", "0"]  # 1 h before 2 h, both from history


def test_history_of_the_previous_version_matches_todays_keys(tmp_path):
    # issue 11.5: a sweep run before train.batch_size was renamed train.global_batch_size still gives durations.
    _run_dir(tmp_path / "sw" / "0", ["train.batch_size=32"], 7200.0)
    _run_dir(tmp_path / "sw" / "1", ["train.batch_size=64"], 3600.0)
    hist = load_history([str(tmp_path / "sw")])
    assert [r["overrides"] for r in hist] == [["train.global_batch_size=32"], ["train.global_batch_size=64"]]
    confs = [conf(gpus_per_node=2, order="sjf"), conf(gpus_per_node=2, order="sjf")]
    plan = plan_confs(confs, [["train.global_batch_size=32"], ["train.global_batch_size=64"]], hist)
    assert plan.order == ["1", "0"]  # both durations found under today's key
    assert plan.makespan_h == pytest.approx(2.0)


def test_history_dir_that_does_not_exist_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_history([str(tmp_path / "nope")])
    assert "sched.history" in str(e.value)
