"""`hpc-ft plan -m ...`: the plan as a table or JSON, nothing submitted, no torch; bad input exits 2."""

import json
import subprocess
import sys

CLI = [sys.executable, "-m", "hpc_ft.cli", "plan"]


def plan(args, cwd):
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_table_lists_every_point_and_submits_nothing(tmp_path):
    res = plan(["-m", "optim.lr=1e-5,3e-5", "precision=bf16,fp32", "sched.est_duration_h=2"], tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "sweep plan: 4 jobs, policy=equal" in out and "assumptions:" in out
    for point in ("optim.lr=1e-05 precision=bf16", "optim.lr=3e-05 precision=fp32"):
        assert point in out
    assert list(tmp_path.iterdir()) == []  # no outputs/, multirun/, job.yaml: nothing was prepared


def test_json_follows_policy_order_and_parallelism(tmp_path):
    res = plan(["-m", "sched.priority=1,3,2,4", "sched.order=priority", "sched.array_parallelism=2",
                "sched.est_duration_h=1", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr
    p = json.loads(res.stdout)
    assert p["order"] == ["3", "1", "2", "0"]
    assert p["array_parallelism"] == 2
    assert p["makespan_h"] == 2.0


def test_lp_gives_gpus_within_the_range_and_budget(tmp_path):
    res = plan(["-m", "optim.lr=1e-5,3e-5,1e-4", "executor=slurm", "resources=gpu", "resources.gpus_per_node=1",
                "sched.min_gpus=1", "sched.max_gpus=8", "sched.budget_gpus=6", "sched.policy=lp",
                "sched.est_duration_h=3", "--json", "--no-queue"], tmp_path)
    assert res.returncode == 0, res.stderr
    p = json.loads(res.stdout)
    gpus = [a["gpus"] for a in p["assignments"]]
    assert gpus == [2, 2, 2] and p["makespan_h"] == 1.5  # 3 GPU-hours each, 6 GPUs shared by 3 jobs


def test_infeasible_budget_exits_2_naming_the_smallest_budget(tmp_path):
    res = plan(["-m", "optim.lr=1e-5,3e-5", "executor=slurm", "resources=gpu", "sched.budget_gpus=2",
                "sched.budget_gpu_hours=1", "sched.est_duration_h=1"], tmp_path)
    assert res.returncode == 2
    assert "sched.budget_gpus=4" in res.stderr and "sched.budget_gpu_hours=8" in res.stderr
    assert "Traceback" not in res.stderr and res.stdout == ""


def test_bad_point_is_named_and_sweeping_a_sweep_wide_key_is_refused(tmp_path):
    res = plan(["-m", "resources.nodes=1,0"], tmp_path)
    assert res.returncode == 2 and "sweep job 1: resources.nodes=0" in res.stderr
    res = plan(["-m", "optim.lr=1e-5", "sched.policy=equal,lp"], tmp_path)
    assert res.returncode == 2 and "sched.policy" in res.stderr and "cannot be swept" in res.stderr


def test_unknown_key_exits_2_without_traceback(tmp_path):
    res = plan(["-m", "sched.polcy=lp"], tmp_path)
    assert res.returncode == 2 and "polcy" in res.stderr and "Traceback" not in res.stderr


def test_queue_wait_from_given_rates(tmp_path):
    res = plan(["-m", "optim.lr=1e-5,3e-5", "--lambda-per-h", "1", "--mu-per-h", "2", "--servers", "1"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "wait before start: 0.5 h expected (M/M/c, c=1" in res.stdout  # M/M/1: rho/(mu-lambda) = 0.5/1


def test_plan_imports_no_torch(tmp_path):
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "hpc_ft.cli", "plan", "-m", "optim.lr=1e-5,3e-5"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    mods = {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}
    assert "hpc_ft.sched" in mods and not {m for m in mods if m == "torch" or m.startswith("torch.")}


def test_only_resource_and_sweep_overrides_are_composed():
    from hpc_ft.commands.plan import plan_relevant, sweep_points

    assert [plan_relevant(o) for o in ("optim.lr=1", "model=mlp", "resources.nodes=2", "sched.priority=3",
                                       "+train.x=1", "wait=false")] == [False, True, True, True, False, True]
    assert sweep_points(["a=1,2", "b=x,y"]) == [["a=1", "b=x"], ["a=1", "b=y"], ["a=2", "b=x"], ["a=2", "b=y"]]


def test_cpu_only_sweep_is_planned_in_node_hours(tmp_path):
    # issue 10.14: a CPU sweep holds nodes, not GPUs: no GPU-hours, priced per node-hour.
    res = plan(["-m", "optim.lr=1e-5,3e-5", "resources.nodes=2", "sched.est_duration_h=1.5",
                "telemetry.price_per_node_hour=0.4", "--no-queue"], tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "GPU" not in out.split("assumptions:")[0], out  # summary and table
    assert "6.000 node-hours, cost 2.40" in out and "at 0.4 per node-hour" in out  # 2 jobs x 2 nodes x 1.5 h
    assert out.split("\n\n")[1].split()[2] == "nodes"  # the column header
    res = plan(["-m", "optim.lr=1e-5,3e-5", "resources.nodes=2", "sched.est_duration_h=1.5", "--json"], tmp_path)
    p = json.loads(res.stdout)
    assert p["unit"] == "node" and p["cost"] == 6.0 * 0.5


def test_a_cpu_only_sweeps_budget_refusal_counts_nodes(tmp_path):
    res = plan(["-m", "optim.lr=1,2", "resources.nodes=2", "sched.budget_gpus=1", "sched.budget_gpu_hours=0.5",
                "sched.est_duration_h=1", "--no-queue"], tmp_path)
    assert res.returncode == 2, res.stderr
    assert "needs at least 2 nodes at once" in res.stderr and "at least 4.0 node-hours" in res.stderr, res.stderr
    assert "GPU" not in res.stderr.replace("sched.budget_gpu", ""), res.stderr


def test_a_bad_value_outside_the_planned_keys_is_refused_as_submit_refuses_it(tmp_path):
    # train.* is not composed for planning (hpc_ft.commands.plan.plan_relevant), yet every job is validated with it.
    res = plan(["-m", "optim.lr=1e-5,3e-5", "train.max_steps=5,-1", "--no-queue"], tmp_path)
    assert res.returncode == 2, res.stdout
    assert "sweep jobs 1, 3: train.max_steps=-1: must be at least 1" in res.stderr and res.stdout == ""
    res = plan(["train.max_steps=abc", "--no-queue"], tmp_path)
    assert res.returncode == 2 and "train.max_steps=abc" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []
