"""`hpc-ft tune` on the real local Slurm: the trials are the tasks of one job array (throttled to the search's
parallelism, each released once its job.yaml is written), a pruned one is stopped at a checkpoint through
``scancel --signal`` on its array task, and the budget holds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.records import TrainResult
from hpc_ft.tune.driver import JOB_ID, UNIT_HOURS
from tests.slurm.conftest import FINAL_STATES
from tests.tune.conftest import study_trials

pytestmark = pytest.mark.slurm

# A synthetic step takes well under a millisecond: a trial must run for seconds after its first evaluation, or it
# ends before the driver's next poll and the signal can stop it (seconds per trial; a pruned one stops early).
MAX_STEPS = 20000
TRIAL = ["model=mlp", "data=synthetic", "data.num_features=2", "data.num_classes=8", "precision=fp32",
         "telemetry=off", "resources.workers_per_node=1", "resources.cpus_per_task=1", "resources.mem_gb=0.5",
         "resources.timeout_min=10", "executor.poll_interval_s=0.5", f"train.max_steps={MAX_STEPS}",
         "train.eval_every_steps=500", "train.ckpt_every_steps=500", "train.log_every_steps=500",
         "train.warmup_steps=0", "tune.poll_interval_s=0.5"]


# Each trial plans resources.timeout_min=10 (1/6 node-hour): this pays for two and a half planned trials.
BUDGET_H = 0.45


def test_a_search_on_slurm_runs_as_one_job_array_and_prunes_a_trial_at_a_checkpoint(slurm_cluster, tmp_path):
    sweep = tmp_path / "sw"
    # One at a time; 0.02 trains far better than the other three, so once it has run, each later trial falls
    # behind at the first rung and is pruned (the grid's order is the seeded sampler's).
    res = subprocess.run([sys.executable, "-m", "hpc_ft.cli", "tune", "optim.lr=choice(0.02,0.0001,0.00003,0.00001)",
                          "executor=slurm", *TRIAL, "tune.sampler=grid", "tune.trials=4", "tune.parallelism=1",
                          "tune.reduction_factor=2", f"sched.budget_gpu_hours={BUDGET_H}", f"hydra.sweep.dir={sweep}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=1200,
                         env={**os.environ, "SLURM_CONF": str(slurm_cluster.conf)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "pruned after step" in res.stdout, res.stdout
    # Released ahead: trial 1's task was queued before trial 0 ended, so Slurm started it as soon as 0 ended.
    out = res.stdout
    assert out.index("trial 1 started: job") < out.index("trial 0 complete"), out
    trials = study_trials(sweep)
    assert len(trials) == 4
    # One array: every trial's job id is a task of it, task n runs trial n; Slurm's accounting shows the array.
    job_ids = [t.user_attrs[JOB_ID] for t in trials]
    array_id = job_ids[0].split("_")[0]
    assert job_ids == [f"{array_id}_{n}" for n in range(4)], job_ids
    acct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", array_id, "-o", "JobID,State"], capture_output=True,
                          text=True, timeout=30, check=True).stdout.splitlines()
    states = dict(line.split("|") for line in acct if line.strip())
    assert set(job_ids) <= set(states) and all(states[j].split()[0] in FINAL_STATES for j in job_ids), acct
    (script,) = {p.read_text() for p in SweepDir(sweep).array_submitit(0).rglob("*.sh")}
    assert "#SBATCH --array=0-3%1" in script and "#SBATCH --hold" in script  # throttled; held until released
    # The budget: what the trials spent, measured by their node reports, within it.
    assert sum(t.user_attrs[UNIT_HOURS] for t in trials) <= BUDGET_H
    pruned = [n for n in range(4) if RunDir(sweep / str(n)).stop_request.exists()]
    assert pruned
    for n in pruned:
        train = TrainResult.load(RunDir(sweep / str(n)).node(0).train_result)
        assert train.preempted and train.steps < MAX_STEPS and train.start_step == 0  # stopped, not requeued
        assert (RunDir(sweep / str(n)).checkpoints / f"step_{train.steps:08d}.pt").exists()
        assert states[job_ids[n]].split()[0] != "REQUEUED"
