"""``python -m hpc_ft.node.entry RUN_DIR/job.yaml``: one node's share of a job started by a plain sbatch script.

The same NodeTask as under submitit, without it: placement from SLURM_*, torchrun, telemetry,
``nodes/node{r}/node_report.json``. On the preemption signal (Slurm's ``--signal`` before the time limit, or
``scancel --signal``) the node's preemption routine (hpc_ft.node.preempt) forwards the signal to torchrun;
when training stopped for preemption and requeues remain (``SLURM_RESTART_COUNT`` < executor.max_requeues),
node 0 runs ``scontrol requeue`` (SIGTERM held) and waits for the requeue to stop it, and the job starts again
in the same run directory, resuming from the checkpoint.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from hpc_ft.job import JobSpec
from hpc_ft.node.preempt import scontrol_requeue, should_requeue
from hpc_ft.node.rendezvous import placement_from_env
from hpc_ft.node.task import PREEMPTED_EXIT_CODE, NodeTask

log = logging.getLogger("hpc_ft.node.entry")


def restart_count(env: dict[str, str] | os._Environ = os.environ) -> int:
    """How often Slurm restarted this job so far (0 on the first run)."""
    try:
        return int(env.get("SLURM_RESTART_COUNT") or 0)
    except ValueError:
        return 0


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
    routine = task.preemption(spec)
    routine.install()  # on the signal: forward it to torchrun and wait for it (no submitit handler here)
    report = task()  # saves nodes/node{rank}/node_report.json
    if not should_requeue(report, routine.received):
        return report.exit_code
    if not routine.may_requeue():
        return PREEMPTED_EXIT_CODE
    if place.node_rank == 0:
        log.info("preempted: requeueing job %s (requeue %d of %d)", place.job_id, runs + 1, routine.max_requeues)
        if not scontrol_requeue(place.job_id):
            return PREEMPTED_EXIT_CODE
        routine.await_requeue_kill()
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
