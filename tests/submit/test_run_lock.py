"""One live submission per run dir (issue 10.2): the lock, its owner record, and unique default run dirs."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from hpc_ft.config.fresh_dir import fresh_dir
from hpc_ft.rundir.lock import PROCESS, SLURM_JOB, RunDirInUse, RunDirLock

HOLDER = textwrap.dedent("""
    import sys
    from hpc_ft.rundir.lock import PROCESS, RunDirLock
    lock = RunDirLock(sys.argv[1])
    lock.acquire("local", PROCESS)
    import os
    lock.record_job(str(os.getpid()))  # as if this process were the local job's controller
    print("held", flush=True)
    sys.stdin.read()  # hold until the test closes our stdin (or kills us)
""")


def _holder(run_dir) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout.readline() == "held\n"
    return p


def test_a_live_submitter_holds_the_dir_and_a_dead_one_does_not(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RunDirInUse, match=rf"in use by job {holder.pid} \(local\), submitted by pid "
                                              rf"{holder.pid} .*Fix: leave hydra.run.dir unset"):
            RunDirLock(tmp_path).acquire("local", PROCESS)
    finally:
        holder.kill()  # dies without releasing: the kernel drops its flock, its owner record stays behind
        holder.wait(timeout=30)
    assert (tmp_path / ".hpc_ft.owner.json").exists()
    lock = RunDirLock(tmp_path)
    lock.acquire("local", PROCESS)  # a stale lock from a dead process does not block
    lock.release()
    assert not (tmp_path / ".hpc_ft.owner.json").exists()


def test_a_detached_local_job_holds_the_dir_until_its_process_ends(tmp_path):
    job = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock = RunDirLock(tmp_path)
        lock.acquire("local", PROCESS)
        lock.record_job(str(job.pid))  # a local job's id is its controller's pid
        lock.detach()  # wait=false: the submitter returns
        with pytest.raises(RunDirInUse, match=rf"job {job.pid} \(local\).*still running.*If you are sure"):
            RunDirLock(tmp_path).acquire("local", PROCESS)
    finally:
        job.kill()
        job.wait(timeout=30)
    again = RunDirLock(tmp_path)
    again.acquire("local", PROCESS)  # the job ended: its dir resumes
    again.release()


def test_a_submitter_killed_while_its_job_runs_leaves_the_job_holding_the_dir(tmp_path):
    job = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        lock = RunDirLock(tmp_path)
        lock.acquire("local", PROCESS)
        lock.record_job(str(job.pid))
        lock._unlock()  # the submitter dies (kill -9) without releasing: only its flock goes
        with pytest.raises(RunDirInUse, match=rf"job {job.pid} \(local\).*still running"):
            RunDirLock(tmp_path).acquire("local", PROCESS)
    finally:
        job.kill()
        job.wait(timeout=30)
    RunDirLock(tmp_path).acquire("local", PROCESS)


def test_a_detached_slurm_job_that_squeue_no_longer_knows_does_not_block(tmp_path):
    lock = RunDirLock(tmp_path)
    lock.acquire("slurm", SLURM_JOB)
    lock.record_job("999999999")
    lock.detach()
    owner = RunDirLock(tmp_path).read_owner()
    assert owner.detached and owner.job_id == "999999999" and owner.executor == "slurm"
    # No squeue here, or squeue says "Invalid job id": refused only while liveness is unknown.
    from hpc_ft.rundir.lock import detached_job_alive

    alive = detached_job_alive(owner)
    if alive is None:
        with pytest.raises(RunDirInUse, match="cannot be checked"):
            RunDirLock(tmp_path).acquire("slurm", SLURM_JOB)
    else:
        assert alive is False
        RunDirLock(tmp_path).acquire("slurm", SLURM_JOB)


def test_fresh_dirs_of_one_second_differ_and_sort_by_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = "outputs/2026-01-01/12-00-00"
    made = [fresh_dir(base) for _ in range(3)]
    assert made == [base, base + "_01", base + "_02"]
    assert all((tmp_path / m).is_dir() for m in made)
    assert sorted([*made, "outputs/2026-01-01/12-00-01", "outputs/2026-01-01/11-59-59"]) == [
        "outputs/2026-01-01/11-59-59", *made, "outputs/2026-01-01/12-00-01"]
