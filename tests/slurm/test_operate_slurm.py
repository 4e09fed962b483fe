"""hpc-ft status, logs, cancel and list against the real local Slurm: a pending job with its reason, a running
one, a requeued one, a cancelled one then resumed, and a sweep (issue 15.1-4)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import wait_until
from tests.slurm.conftest import wait_job_done

pytestmark = pytest.mark.slurm

SLURM = ["executor=slurm", "resources.mem_gb=1", "resources.timeout_min=10", "executor.poll_interval_s=0.5",
         "resources.nodes=1", "train.log_every_steps=1"]
HOLD_AT = 8


def _job_id(stdout: str) -> str:
    m = re.search(r"submitted job (\S+)", stdout)
    assert m, stdout
    return m.group(1)


def _status(run_cli, path) -> dict | list:
    res = run_cli("status", str(path), "--json", timeout_s=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def test_pending_running_requeued_and_cancelled_jobs(slurm_cluster, run_cli, synth, tmp_path):
    held, pending = tmp_path / "runs" / "held", tmp_path / "runs" / "pending"
    first = run_cli("submit", *synth, *SLURM, "wait=false", "executor.preempt_signal_delay_s=60",
                    f"+executor.env.HPC_FT_TEST_HOLD_AT_STEP={HOLD_AT}", f"hydra.run.dir={held}")
    assert first.returncode == 0, first.stdout + first.stderr
    later = run_cli("submit", *synth, *SLURM, "wait=false", "+executor.extra_sbatch.begin=now+3600",
                    f"hydra.run.dir={pending}")
    assert later.returncode == 0, later.stdout + later.stderr
    held_id, pending_id = _job_id(first.stdout), _job_id(later.stdout)
    try:
        wait_until((held / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold")
        st = _status(run_cli, held)
        assert (st["state"], st["job_id"], st["probe"], st["step"]) == ("RUNNING", held_id, "slurm_job", HOLD_AT)
        assert [n["state"] for n in st["nodes"]] == ["running"]
        st = _status(run_cli, pending)
        assert (st["state"], st["reason"], st["job_id"]) == ("PENDING", "BeginTime", pending_id), st
        text = run_cli("status", str(pending)).stdout
        assert f"job {pending_id} (Slurm): PENDING (BeginTime)" in text
        listed = run_cli("list", str(tmp_path / "runs")).stdout
        assert "PENDING (BeginTime)" in listed and "RUNNING" in listed

        cancelled = run_cli("cancel", str(pending), "--yes")
        assert cancelled.returncode == 0 and f"scancel {pending_id}" in cancelled.stdout, cancelled.stdout
        wait_job_done(pending_id)
        assert _status(run_cli, pending)["state"] == "CANCELLED"

        subprocess.run(["scancel", "--signal=USR2", held_id], check=True, timeout=30)  # a preemption
        assert wait_job_done(held_id) == ["REQUEUED", "COMPLETED"]
    finally:
        subprocess.run(["scancel", held_id, pending_id], timeout=30)
    st = _status(run_cli, held)
    assert (st["state"], st["requeues"], st["step"]) == ("COMPLETED", 1, 20), st
    assert "COMPLETED, requeued 1x" in run_cli("status", str(held)).stdout


def test_a_cancelled_running_job_resumes_when_submitted_again(slurm_cluster, run_cli, synth, tmp_path):
    run = tmp_path / "run"
    first = run_cli("submit", *synth, *SLURM, "wait=false", f"+executor.env.HPC_FT_TEST_HOLD_AT_STEP={HOLD_AT}",
                    f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stdout + first.stderr
    job_id = _job_id(first.stdout)
    try:
        wait_until((run / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold")
        logs = run_cli("logs", str(run))
        assert f"{job_id}_0_log.out <==" in logs.stdout and "torchrun.log <==" in logs.stdout, logs.stdout
        follow = subprocess.Popen([sys.executable, "-m", "hpc_ft.cli", "logs", str(run), "-f"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        res = run_cli("cancel", str(run), "--yes")
        assert res.returncode == 0 and f"scancel {job_id}" in res.stdout and "hydra.run.dir=" in res.stdout
        out, _ = follow.communicate(timeout=120)  # -f ends with the job
        assert follow.returncode == 0 and "torchrun.log" in out
    finally:
        subprocess.run(["scancel", job_id], timeout=30)
    wait_job_done(job_id)
    st = _status(run_cli, run)
    assert st["state"] == "CANCELLED" and [n["state"] for n in st["nodes"]] == ["preempted"], st
    again = run_cli("submit", *synth, *SLURM, f"hydra.run.dir={run}")
    assert again.returncode == 0, again.stdout + again.stderr
    node = json.loads((run / "nodes" / "node0" / "node_report.json").read_text())
    assert node["train"]["start_step"] == HOLD_AT and node["train"]["steps"] == 20
    st = _status(run_cli, run)
    assert st["state"] == "COMPLETED" and st["job_id"] == _job_id(again.stdout)


def test_status_of_a_slurm_sweep_has_one_line_per_array_task(slurm_cluster, run_cli, synth, tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli("submit", "-m", *synth, *SLURM, "train.max_steps=3", "optim.lr=0.01,0.02",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    states = _status(run_cli, sweep)
    assert [s["state"] for s in states] == ["COMPLETED", "COMPLETED"], states
    assert all(re.fullmatch(r"\d+_[01]", s["job_id"]) and s["probe"] == "slurm_job" for s in states)
    out = run_cli("status", str(sweep)).stdout
    assert "(2 job(s))" in out and out.count("COMPLETED") == 2
