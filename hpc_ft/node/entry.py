"""``python -m hpc_ft.node.entry RUN_DIR/job.yaml``: one node's share of a job started by a plain sbatch script.

The same NodeTask as under submitit, without it: placement from SLURM_*, torchrun, telemetry,
``nodes/node_{r}.json``. On the preemption signal (Slurm's ``--signal`` before the time limit, or
``scancel --signal``) it forwards the signal to torchrun; when training stopped for preemption and
requeues remain (``SLURM_RESTART_COUNT`` < executor.max_requeues), node 0 runs ``scontrol requeue``
and the job starts again in the same run directory, resuming from the checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys

from hpc_ft.job import JobSpec
from hpc_ft.node.rendezvous import placement_from_env
from hpc_ft.node.result import NodeReport
from hpc_ft.node.slurm_task import PreemptForwarder, preempt_signum
from hpc_ft.node.task import PREEMPTED_EXIT_CODE, NodeTask

log = logging.getLogger("hpc_ft.node.entry")

REQUEUE_KILL_WAIT_S = 120  # after `scontrol requeue`, Slurm stops the job; don't let this step finish first


def restart_count(env: dict[str, str] | os._Environ = os.environ) -> int:
    """How often Slurm restarted this job so far (0 on the first run)."""
    try:
        return int(env.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


def should_requeue(report: NodeReport, signalled: bool) -> bool:
    """Training stopped at a preemption checkpoint (torchrun exits non-zero after forwarding a signal)."""
    return report.requeued or (signalled and not report.ok)


def requeue(job_id: str) -> bool:
    """``scontrol requeue JOB``; True when Slurm accepted it."""
    proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        log.error("scontrol requeue %s failed: %s", job_id, proc.stderr.strip())
    return proc.returncode == 0


def _await_requeue_kill() -> None:
    """Block (bounded) until Slurm's requeue stops this step, so the job can't complete first."""
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    signal.sigtimedwait([signal.SIGTERM], REQUEUE_KILL_WAIT_S)


def _claim_run_dir(spec: JobSpec, job_id: str) -> bool:
    """Node 0 holds the run dir for this job (no `hpc-ft submit` does for a script job); False: another live
    job uses it, and this job is cancelled (all its nodes) before it touches anything there."""
    from hpc_ft.rundir.lock import RunDirInUse, claim_for_job

    try:
        claim_for_job(spec.run_dir, "slurm", job_id)
        return True
    except RunDirInUse as exc:
        log.error("not starting: %s", exc)
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)
        return False


def run(spec_path: str) -> int:
    """Run this node's task; returns the exit status for srun (0: done or requeued)."""
    spec = JobSpec.load(spec_path)
    place = placement_from_env()
    if place.node_rank == 0 and not _claim_run_dir(spec, place.job_id):
        return 2
    runs = restart_count()
    task = NodeTask(spec_path, requeues=runs)
    fwd = PreemptForwarder(task, preempt_signum(spec))
    signal.signal(fwd.signum, fwd)
    report = task()  # saves nodes/node_{rank}.json
    if not should_requeue(report, fwd.received):
        return report.exit_code
    max_requeues = spec.conf.executor.max_requeues
    if runs >= max_requeues:
        log.warning("preempted, but not requeueing: executor.max_requeues=%d reached", max_requeues)
        return PREEMPTED_EXIT_CODE
    if place.node_rank == 0:
        log.info("preempted: requeueing job %s (requeue %d of %d)", place.job_id, runs + 1, max_requeues)
        if not requeue(place.job_id):
            return PREEMPTED_EXIT_CODE
        _await_requeue_kill()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m hpc_ft.node.entry RUN_DIR/job.yaml", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    return run(argv[0])


if __name__ == "__main__":
    sys.exit(main())
