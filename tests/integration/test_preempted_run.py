"""A preempted local run is not a failure (issue 10.11): it says where it stopped and how to resume, then resumes."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import job_processes, torchrun_agent, wait_until

pytestmark = pytest.mark.slow


def test_sigusr2_to_torchrun_checkpoints_reports_preempted_and_prints_a_pasteable_resume(tmp_path, synth):
    run = tmp_path / "run (a) it's"  # the resume command must survive the shell and Hydra's override parser
    exe = Path(sys.executable).with_name("hpc-ft")
    quoted = "'" + str(run).replace("'", "\\'") + "'"
    proc = subprocess.Popen([str(exe), "submit", *synth, "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=3",
                             f"hydra.run.dir={quoted}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        wait_until((run / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold")
        os.kill(wait_until(lambda: torchrun_agent(run / "job.yaml"), 30, "torchrun"), signal.SIGUSR2)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
        for pid in job_processes(run / "job.yaml"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 75, out + err  # EX_TEMPFAIL: resumable, not the 1 of a failure
    assert "preempted at step 3 of 20" in out and "Not a failure" in out, out
    for noise in ("Traceback", "SignalException", "error output"):
        assert noise not in out + err, out + err
    (line,) = [ln for ln in out.splitlines() if ln.strip().startswith("hpc-ft submit ")]
    argv = shlex.split(line)
    assert argv[-1] == f"hydra.run.dir={quoted}"
    resumed = subprocess.run([str(exe), *argv[1:]], capture_output=True, text=True, timeout=300,
                             stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    (node,) = json.loads((run / "results.json").read_text())
    assert node["train"]["start_step"] == 3 and node["train"]["steps"] == 20
