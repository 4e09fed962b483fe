"""hpc-ft status and cancel on one job dir of a Slurm sweep's job array, on the real local Slurm (trial 4,
problem 4): the task is Slurm's, named by its array id, and cancel stops that task alone. The array is held
pending (``--begin`` an hour on), so no job trains and the test takes seconds."""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.slurm


def test_cancel_of_one_job_dir_of_a_slurm_array_cancels_that_task_alone(slurm_cluster, run_cli, synth, tmp_path):
    sweep = tmp_path / "sweep"
    res = run_cli("submit", "-m", *synth, "executor=slurm", "resources.mem_gb=1", "resources.timeout_min=10",
                  "+executor.extra_sbatch.begin=now+3600", "wait=false", "optim.lr=0.01,0.02",
                  f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ids = [j["job_id"] for j in json.loads((sweep / "manifest.json").read_text())["jobs"]]
    assert len(ids) == 2 and all(re.fullmatch(r"\d+_[01]", i) for i in ids), ids
    array = ids[0].split("_")[0]
    try:
        text = run_cli("status", str(sweep / "0"), timeout_s=60).stdout
        assert f"job {ids[0]} (Slurm): PENDING" in text, text  # (BeginTime) once the scheduler has looked
        cancelled = run_cli("cancel", str(sweep / "0"), "--yes", timeout_s=60)
        assert cancelled.returncode == 0 and f"scancel {ids[0]}\n" in cancelled.stdout, cancelled.stdout
        # A pending task cancelled leaves no accounting record of its own: its run dir's cancel record tells.
        wait_until(lambda: "CANCELLED" in run_cli("status", str(sweep / "0"), timeout_s=60).stdout, 60,
                   "job dir 0 to read CANCELLED")
        text = run_cli("status", str(sweep / "1"), timeout_s=60).stdout
        assert f"job {ids[1]} (Slurm): PENDING" in text, text  # the other task waits on
    finally:
        subprocess.run(["scancel", array], timeout=30)


def test_status_of_one_job_dir_of_a_hydra_apps_slurm_array(slurm_cluster, hydra_sweep_runner, run_cli, tmp_path):
    """It said `job 1_2 (local process): COMPLETED` and `step 0` for your own Hydra app's task on Slurm."""
    sweep = hydra_sweep_runner(
        calling_file=None, calling_module="hydra.test_utils.a_module", task_function=lambda cfg: cfg.a,
        config_path="configs", config_name="compose",
        overrides=["hydra/launcher=hpc_ft", "hydra.launcher.executor=slurm", "hydra.launcher.mem_gb=1",
                   "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5", "+a=1,2"],
        temp_dir=tmp_path)
    with sweep:  # Hydra's sweep runner removes its temp dir on exit: read the job dirs inside
        assert [r.return_value for r in sweep.returns[0]] == [1, 2]
        text = run_cli("status", str(tmp_path / "1"), timeout_s=60).stdout
    assert re.search(r"^job \d+_1 \(Slurm\): ", text, re.M) and "step" not in text, text
