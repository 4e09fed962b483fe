"""The run-dir lock: one live submission per run dir; a finished run's dir resumes as before.

Two files in the run dir:

- ``.hpc_ft.lock``: ``flock``-ed by the submitting process while it is attached (``wait=true``: submit, wait,
  gather, report). The kernel drops the lock when that process ends however it ends, so a crashed
  submitter never leaves a lock that blocks.
- ``.hpc_ft.owner.json``: who holds the dir (pid, host, executor, job id, and how to tell that its job is
  alive), written atomically. When the submitter returns while the job runs on (``wait=false``) it marks the
  record *detached* and lets go of the flock; the job itself then holds the dir for as long as it is alive,
  as the executor's liveness probe says (``Executor.liveness``; the lock knows probes, not executors):
  ``SLURM_JOB``: while ``squeue`` still lists its id (requeues included); ``PROCESS``: while the process whose
  pid is the job id (submitit's local controller; checked with its start time, so a reused pid does not count)
  is alive on the host that submitted it; ``NO_PROBE``: never (the job cannot outlive its submitter).

A submission into a dir held by a live owner is refused before anything is written (RunDirInUse, exit 2),
naming the owner and the fix. An owner that is gone (flock free, detached job ended) does not block.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from hpc_ft.errors import HpcFtError
from hpc_ft.rundir.atomic import atomic_write_text
from hpc_ft.rundir.layout import RunDir
OWNER_VERSION = 1
SQUEUE_TIMEOUT_S = 30
# Job states in which a Slurm job may still run or run again (squeue --states; the rest are final).
ACTIVE_SLURM_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "STOPPED",
                                 "SIGNALING", "STAGE_OUT", "RESIZING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED",
                                 "RESV_DEL_HOLD", "SPECIAL_EXIT"})


# How to tell that a detached owner's job still runs (LockOwner.liveness): each executor names one.
SLURM_JOB = "slurm_job"  # squeue lists the job id
PROCESS = "process"  # the job id is the pid of a process on the submitting host
NO_PROBE = "none"  # the job ends with its submitter
LIVENESS_PROBES = (SLURM_JOB, PROCESS, NO_PROBE)


class RunDirInUse(HpcFtError):
    """Another live submission uses this run dir."""


@dataclass(frozen=True)
class LockOwner:
    """Who holds a run dir: the submitting process, and once known the job it submitted."""

    pid: int
    host: str
    executor: str  # the executor's name, shown to a refused submission
    started_unix_s: float
    liveness: str = NO_PROBE  # one of LIVENESS_PROBES
    job_id: str | None = None
    detached: bool = False  # the submitter returned (wait=false): the job holds the dir while it lives
    job_pid_start_ticks: int | None = None  # local jobs: start time of the controller (pid = job id)
    version: int = OWNER_VERSION

    def describe(self) -> str:
        job = f"job {self.job_id} ({self.executor})" if self.job_id else f"a {self.executor} job being submitted"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started_unix_s))
        return f"{job}, submitted by pid {self.pid} on {self.host} at {when}"


def _pid_start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None once it has ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] in ("Z", "X") else int(fields[19])  # a zombie has ended: not alive
    except (OSError, IndexError, ValueError):
        return None


def _slurm_job_alive(job_id: str) -> bool | None:
    """True while squeue lists the job (pending, running, requeued, ...), False once it does not; None: unknown."""
    try:
        proc = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True,
                              timeout=SQUEUE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode == 0:  # squeue -j also lists a finished job for a while (MinJobAge), in its final state
        return any(state in ACTIVE_SLURM_STATES for state in proc.stdout.split())
    return False if "Invalid job id" in proc.stderr else None


def detached_job_alive(owner: LockOwner) -> bool | None:
    """Whether an owner's job still runs (its submitter may be gone); None when this host cannot tell."""
    if owner.liveness == SLURM_JOB and owner.job_id:
        return _slurm_job_alive(owner.job_id)
    if owner.liveness == PROCESS and owner.job_id:
        if owner.host != socket.gethostname():
            return None
        try:
            ticks = _pid_start_ticks(int(owner.job_id))
        except ValueError:
            return None
        return ticks is not None and ticks == owner.job_pid_start_ticks
    return False


class RunDirLock:
    """Hold ``run_dir`` for one submission: ``acquire`` ... ``record_job`` ... ``release`` or ``detach``."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None
        self._owner: LockOwner | None = None

    @property
    def owner_path(self) -> Path:
        return RunDir(self.run_dir).owner

    def read_owner(self) -> LockOwner | None:
        try:
            d: dict[str, Any] = json.loads(self.owner_path.read_text())
            return LockOwner(**{k: d[k] for k in LockOwner.__dataclass_fields__ if k in d})
        except (OSError, ValueError, TypeError):
            return None

    def in_use(self) -> bool:
        """Whether a submission holds the dir now: its submitter is attached (it holds the flock), or its detached
        job still runs (False where that cannot be told from this host). Reads only: nothing is created."""
        try:
            fd = os.open(RunDir(self.run_dir).lock, os.O_RDONLY)
        except OSError:
            return False  # never submitted into
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a flock this call took
        owner = self.read_owner()
        return bool(owner is not None and owner.job_id and detached_job_alive(owner))

    def acquire(self, executor: str, liveness: str) -> None:
        """Take the dir for this process, or raise RunDirInUse naming the live owner (nothing written then).

        ``executor``: its name, for messages; ``liveness``: how a later submission tells that this one's job,
        once detached, still runs (one of LIVENESS_PROBES).
        """
        if liveness not in LIVENESS_PROBES:
            raise ValueError(f"liveness={liveness!r}: one of {LIVENESS_PROBES}")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(RunDir(self.run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._refuse(self.read_owner(), "its submitter is still attached")
        prev = self.read_owner()
        # A job whose submitter is gone holds the dir while it runs: detached on purpose (wait=false, a script
        # job's node 0), or a submitter that was killed while it waited.
        if prev is not None and prev.job_id:
            alive = detached_job_alive(prev)
            if alive or alive is None:
                os.close(fd)  # drops the flock
                self._refuse(prev, "the job is still running" if alive else
                             f"whether the job still runs cannot be checked from {socket.gethostname()}")
        self._fd = fd
        self._write(LockOwner(os.getpid(), socket.gethostname(), executor, time.time(), liveness=liveness))

    def record_job(self, job_id: str) -> None:
        """Name the submitted job in the owner record (shown to a refused submission)."""
        assert self._owner is not None, "acquire() first"
        ticks = _pid_start_ticks(int(job_id)) if self._owner.liveness == PROCESS and job_id.isdigit() else None
        self._write(replace(self._owner, job_id=str(job_id), job_pid_start_ticks=ticks))

    def detach(self) -> None:
        """The submitter returns while the job runs on: the job holds the dir from now on."""
        assert self._owner is not None, "acquire() first"
        self._write(replace(self._owner, detached=True))
        self._unlock()

    def release(self) -> None:
        """The submission is over (the job ended, or submitting failed): the dir is free again."""
        if self._fd is None:
            return
        self.owner_path.unlink(missing_ok=True)
        self._unlock()

    def _write(self, owner: LockOwner) -> None:
        self._owner = owner
        atomic_write_text(self.owner_path, json.dumps(asdict(owner), indent=1))

    def _unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _refuse(self, owner: LockOwner | None, why: str) -> None:
        who = owner.describe() if owner else "another submission"
        raise RunDirInUse(
            f"run dir {self.run_dir} is in use by {who} ({why}); a second submission would train in the same "
            "checkpoints and overwrite its results. Fix: leave hydra.run.dir unset for a new run dir, or wait "
            f"until that job has ended (`hpc-ft report {shlex.quote(str(self.run_dir))}` shows it) and submit "
            "again to resume it."
            + ("" if owner is None or not owner.job_id else
               f" If you are sure it has ended, delete {self.owner_path}."))


def claim_for_job(run_dir: Path, executor: str, job_id: str, liveness: str = SLURM_JOB) -> None:
    """Node 0 of a job that no ``hpc-ft submit`` holds (a script from ``hpc-ft sbatch``): hold the dir for it.

    Records this job as the dir's detached owner, so a second submission (or a second ``sbatch`` of the same
    script) is refused while it runs. A record of this very job (its submitter, an earlier run before a
    requeue) is kept. Raises RunDirInUse when another job that is known to be running holds the dir (one
    whose liveness cannot be checked from a compute node does not block: the job is already running).
    """
    lock = RunDirLock(run_dir)
    fd = os.open(RunDir(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        prev = lock.read_owner()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if prev is not None and prev.job_id == str(job_id):
                return  # our own submitter waits on us
            lock._refuse(prev, "its submitter is still attached")
        prev = lock.read_owner()
        if prev is not None and prev.job_id == str(job_id):
            return
        if prev is not None and prev.job_id and detached_job_alive(prev):
            lock._refuse(prev, "the job is still running")
        lock._write(LockOwner(os.getpid(), socket.gethostname(), executor, time.time(), liveness, str(job_id),
                              detached=True))
    finally:
        os.close(fd)
