"""A 4-point sweep on the real local Slurm: one job array, %2, every node of every job gathered, sjf order."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hpc_ft.rundir.records import NodeReport
from hpc_ft.rundir.layout import RunDir

pytestmark = pytest.mark.slurm

TINY = ["model=mlp", "data=synthetic", "precision=fp32", "train.max_steps=10", "telemetry=off",
        "resources.workers_per_node=1", "resources.cpus_per_task=1", "resources.mem_gb=0.5",
        "resources.timeout_min=10", "executor.poll_interval_s=0.5"]


def _span(run) -> tuple[int, int]:
    """(start, end) of a job's node 0: its torchrun argv is written at start, train.json when training ends."""
    node = run / "nodes" / "node0"
    return (node / "torchrun_argv.json").stat().st_mtime_ns, (node / "train.json").stat().st_mtime_ns


def test_four_point_sweep_is_one_array_of_parallelism_two(slurm_cluster, tmp_path):
    sweep = tmp_path / "sw"
    # sjf: est_duration_h 0.4, 0.1, 0.3, 0.2 -> submission (array task) order 1, 3, 2, 0.
    res = subprocess.run([sys.executable, "-m", "hpc_ft.cli", "submit", "-m", "sched.est_duration_h=0.4,0.1,0.3,0.2",
                          "executor=slurm", "resources.nodes=2", "sched.order=sjf", "sched.array_parallelism=2",
                          *TINY, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=900, env={**os.environ, "SLURM_CONF": str(slurm_cluster.conf)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

    manifest = json.loads((sweep / "manifest.json").read_text())
    assert manifest["plan"]["order"] == ["1", "3", "2", "0"] and manifest["state"] == "finished"
    ids = {j["num"]: j["job_id"] for j in manifest["jobs"]}
    arrays = {i.split("_")[0] for i in ids.values()}
    assert len(arrays) == 1 and all("_" in i for i in ids.values()), ids  # one job array for the four jobs
    assert {n: int(ids[n].split("_")[1]) for n in ids} == {1: 0, 3: 1, 2: 2, 0: 3}  # task index = plan position

    for n in range(4):  # every node's report of every job, gathered and saved
        run = sweep / str(n)
        results = json.loads((run / "results.json").read_text())
        assert [r["node_rank"] for r in results] == [0, 1] and all(r["exit_code"] == 0 for r in results)
        assert len({r["host"] for r in results}) == 2  # the two nodes of the allocation
        assert all(NodeReport.load(RunDir(run).node(r).report).train.steps == 10 for r in range(2))

    # Start order: Slurm starts array tasks in index order; with %2 the first two (jobs 1, 3: the shortest)
    # start together, and tasks 2, 3 only once one of them has ended.
    task_of = {int(ids[n].split("_")[1]): n for n in ids}
    spans = [_span(sweep / str(task_of[t])) for t in range(4)]
    first_wave, second_wave = spans[:2], spans[2:]
    assert max(s for s, _ in first_wave) < min(s for s, _ in second_wave)
    assert min(s for s, _ in second_wave) >= min(e for _, e in first_wave)
    for start, _ in spans:  # %2: never more than two jobs running at once
        assert sum(1 for s0, e0 in spans if s0 <= start < e0) <= 2


def test_a_request_the_cluster_cannot_hold_is_refused_before_any_job_is_submitted(slurm_cluster, tmp_path):
    sweep = tmp_path / "sw"
    res = subprocess.run([sys.executable, "-m", "hpc_ft.cli", "submit", "-m", "resources.gpus_per_node=1,8",
                          "executor=slurm", *TINY, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env={**os.environ, "SLURM_CONF": str(slurm_cluster.conf)})
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "resources.gpus_per_node" in res.stderr and "Traceback" not in res.stderr
    assert not list(sweep.rglob("job.yaml")) and not (sweep / ".submitit").exists()


def test_wait_false_returns_at_once_and_report_gathers_the_array_later(slurm_cluster, tmp_path):
    from tests.slurm.conftest import wait_job_done

    sweep = tmp_path / "sw"
    env = {**os.environ, "SLURM_CONF": str(slurm_cluster.conf)}
    res = subprocess.run([sys.executable, "-m", "hpc_ft.cli", "submit", "-m", "optim.lr=1e-3,3e-3", "executor=slurm",
                          "wait=false", *TINY, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"hpc-ft report {sweep}" in res.stdout
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert manifest["wait"] is False and not (sweep / "0" / "results.json").exists()  # nothing gathered yet
    for job in manifest["jobs"]:
        assert wait_job_done(job["job_id"]) == ["COMPLETED"]
    rep = subprocess.run([sys.executable, "-m", "hpc_ft.cli", "report", str(sweep)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300, env=env)
    assert rep.returncode == 0, rep.stdout[-3000:] + rep.stderr[-3000:]
    sweep_json = json.loads((sweep / "report" / "sweep.json").read_text())
    assert sorted(j["sweep_job"] for j in sweep_json) == ["0", "1"]
    for n in range(2):
        assert NodeReport.load(RunDir(sweep / str(n)).node(0).report).train.steps == 10
