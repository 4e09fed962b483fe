"""Run dirs of concurrent submissions (issue 10.2): never shared by accident, never entered while in use."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_ft.rundir.lock import RunDirLock, detached_job_alive
from tests.conftest import hpc_ft_cmd, kill_job_processes, torchrun_agent, wait_until

pytestmark = pytest.mark.slow


def _run_dir(stdout: str) -> Path:
    m = re.search(r"run dir: (\S+)", stdout)
    assert m, stdout
    return Path(m.group(1))


def test_two_submits_at_once_get_their_own_default_run_dirs_and_results(tmp_path, synth):
    exe = Path(sys.executable).with_name("hpc-ft")
    procs = {seed: subprocess.Popen([str(exe), "submit", *synth, "train.max_steps=6", f"train.seed={seed}"],
                                    cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    stdin=subprocess.DEVNULL) for seed in (1, 2)}
    outs = {seed: p.communicate(timeout=300)[0] for seed, p in procs.items()}
    assert all(p.returncode == 0 for p in procs.values()), outs
    dirs = {seed: _run_dir(out) for seed, out in outs.items()}
    assert dirs[1] != dirs[2] and dirs[1].parent == dirs[2].parent == tmp_path / "outputs" / dirs[1].parent.name
    for seed, run in dirs.items():
        assert f"seed: {seed}\n" in (run / "job.yaml").read_text()
        (node,) = json.loads((run / "results.json").read_text())
        assert f"{node['train']['final_loss']:.4f}" in outs[seed]  # each prints its own run's result


def test_a_live_run_dir_refuses_a_second_submission_and_resumes_once_it_ended(tmp_path, synth):
    run = tmp_path / "run"
    first = hpc_ft_cmd("submit", *synth, "wait=false", "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=3",
                       f"hydra.run.dir={run}", timeout_s=120)
    assert first.returncode == 0, first.stdout + first.stderr
    job_id = re.search(r"submitted job (\d+)", first.stdout).group(1)
    try:
        wait_until((run / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold")
        second = hpc_ft_cmd("submit", *synth, f"hydra.run.dir={run}", timeout_s=120)
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"in use by job {job_id} (local)" in second.stderr and "Fix: " in second.stderr
        assert "Traceback" not in second.stderr
        os.kill(wait_until(lambda: torchrun_agent(run / "job.yaml"), 30, "torchrun"), signal.SIGUSR2)
        owner = RunDirLock(run).read_owner()
        assert owner.detached and owner.job_id == job_id
        wait_until(lambda: detached_job_alive(owner) is False, 180, "the first job to end")
    finally:
        kill_job_processes(run / "job.yaml")
    third = hpc_ft_cmd("submit", *synth, f"hydra.run.dir={run}", timeout_s=300)  # ended: resume as before
    assert third.returncode == 0, third.stdout + third.stderr
    (node,) = json.loads((run / "results.json").read_text())
    assert node["train"]["start_step"] == 3 and node["train"]["steps"] == 20
