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

from tests.conftest import kill_job_processes, torchrun_agent, wait_until

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
        kill_job_processes(run / "job.yaml")
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


def _in_a_terminal(argv: list[str], cwd: Path, until, keys: bytes, timeout_s: float = 180) -> tuple[int, str]:
    """Run ``argv`` on a pseudo-terminal of its own (its controlling terminal, as in a shell) and type ``keys`` once
    ``until()`` holds: Ctrl-C there is SIGINT to the whole foreground process group, as a user's is. Returns the
    exit status and everything it printed."""
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: exec at once (nothing of pytest's may run here)
        os.chdir(cwd)
        os.execv(argv[0], argv)
    out, typed, deadline = b"", False, time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not typed and until():
                os.write(fd, keys)
                typed = True
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child has exited and closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
        else:
            pytest.fail(f"{argv[:3]} did not end within {timeout_s:.0f} s:\n{out.decode(errors='replace')[-3000:]}")
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(fd)
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace").replace("\r\n", "\n")


def _processes_naming(path: Path) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if str(path) in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry))
    return pids


def test_ctrl_c_stops_a_local_job_at_a_checkpoint_and_shows_its_results(tmp_path, synth):
    """A terminal's Ctrl-C reaches submitit's controller and the node tasks too: they used to die within a second,
    mid-step, with no checkpoint, no node report and a KeyboardInterrupt traceback. The job's processes now ignore
    it and hpc-ft stops the job as a preemption would."""
    run = tmp_path / "run"
    exe = str(Path(sys.executable).with_name("hpc-ft"))
    try:
        code, out = _in_a_terminal([exe, "submit", *synth, "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=3",
                                    f"hydra.run.dir={run}"], tmp_path,
                                   until=(run / "nodes" / "node0" / "held_at_step").exists, keys=b"\x03")
        left = _processes_naming(run)
    finally:
        for pid in _processes_naming(run):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert code == 130, out  # 128 + SIGINT, as a shell counts a Ctrl-C
    assert "stopping job" in out and "stopped local job" in out, out
    assert "preempted at step 3 of 20" in out and f"hydra.run.dir={run}" in out, out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out
    assert (run / "checkpoints" / "step_00000003.pt").exists()
    assert not left  # nothing of the job is left running


def test_ctrl_c_stops_a_local_sweeps_running_jobs_at_a_checkpoint(tmp_path, synth):
    sweep = tmp_path / "sw"
    exe = str(Path(sys.executable).with_name("hpc-ft"))
    try:
        code, out = _in_a_terminal([exe, "submit", "-m", *synth, "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=3",
                                    "optim.lr=0.1,0.01", f"hydra.sweep.dir={sweep}"], tmp_path,
                                   until=lambda: (sweep / "0" / "nodes" / "node0" / "held_at_step").exists(),
                                   keys=b"\x03")
        left = _processes_naming(sweep)
    finally:
        for pid in _processes_naming(sweep):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert code == 130 and "Traceback" not in out, out
    assert "Ctrl-C: stopping 2 running job(s) at a checkpoint" in out and "interrupted" in out, out
    assert (sweep / "0" / "checkpoints" / "step_00000003.pt").exists()
    assert not left
