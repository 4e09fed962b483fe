"""`hpc-ft tune` on the real local Slurm: trials are Slurm jobs, a pruned one is stopped through scancel --signal."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.records import TrainResult

pytestmark = pytest.mark.slurm

# A synthetic step takes well under a millisecond: a trial must run for seconds after its first evaluation, or it
# ends before the driver's next poll and the signal can stop it (seconds per trial; a pruned one stops early).
MAX_STEPS = 20000
TRIAL = ["model=mlp", "data=synthetic", "data.num_features=2", "data.num_classes=8", "precision=fp32",
         "telemetry=off", "resources.workers_per_node=1", "resources.cpus_per_task=1", "resources.mem_gb=0.5",
         "resources.timeout_min=10", "executor.poll_interval_s=0.5", f"train.max_steps={MAX_STEPS}",
         "train.eval_every_steps=500", "train.ckpt_every_steps=500", "train.log_every_steps=500",
         "train.warmup_steps=0", "tune.poll_interval_s=0.5"]


def test_a_search_on_slurm_prunes_a_trial_at_a_checkpoint(slurm_cluster, tmp_path):
    sweep = tmp_path / "sw"
    # One at a time; 0.02 trains far better than the other three, so once it has run, each later trial falls
    # behind at the first rung and is pruned (the grid's order is the seeded sampler's).
    res = subprocess.run([sys.executable, "-m", "hpc_ft.cli", "tune", "optim.lr=choice(0.02,0.0001,0.00003,0.00001)",
                          "executor=slurm", *TRIAL, "tune.sampler=grid", "tune.trials=4", "tune.parallelism=1",
                          "tune.reduction_factor=2", f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=1200, env={**os.environ, "SLURM_CONF": str(slurm_cluster.conf)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "pruned after step" in res.stdout, res.stdout
    pruned = [n for n in range(4) if RunDir(sweep / str(n)).stop_request.exists()]
    assert pruned
    for n in pruned:
        train = TrainResult.load(RunDir(sweep / str(n)).node(0).train_result)
        assert train.preempted and train.steps < MAX_STEPS and train.start_step == 0  # stopped, not requeued
        assert (RunDir(sweep / str(n)).checkpoints / f"step_{train.steps:08d}.pt").exists()
