"""executor=slurm: submitit's SlurmExecutor, one task per node; preemption forwarded to every node's torchrun.

The Slurm request itself (sbatch options, setup lines, submitit parameters) is rendered by
``hpc_ft.submit.slurm``, shared with ``hpc-ft sbatch``; the cluster check by ``hpc_ft.submit.preflight``.
A sweep is one job array per group of jobs with the same request, tasks in plan order, ``%parallelism``; a search
(``hpc-ft tune``) is one held job array whose tasks the driver releases (``scontrol release``) trial by trial.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable, Sequence

from hpc_ft.rundir.lock import SLURM_JOB
from hpc_ft.config.schema import JobConf
from hpc_ft.job import JobSpec
from hpc_ft.node.slurm_task import SlurmNodeTask
from hpc_ft.rundir.layout import SweepDir
from hpc_ft.submit.executors.base import Executor, RecordIds, RecordState, SweepEntry, gather_entries

log = logging.getLogger(__name__)


class SlurmExecutor(Executor):
    """A Slurm cluster through submitit: requeue on preemption, bounded by executor.max_requeues."""

    name = "slurm"
    liveness = SLURM_JOB  # a detached job holds its run dir while it runs (hpc_ft.rundir.lock)
    queue_estimate = True
    node_task_class = SlurmNodeTask

    def check_before_submit(self, spec: JobSpec) -> None:
        """Values a batch script can't hold; with ``preflight``, the partition's limits (asks the cluster)."""
        from hpc_ft.submit.slurm import check_sbatch_values

        check_sbatch_values(spec)
        if spec.conf.preflight:
            from hpc_ft.submit.preflight import preflight

            preflight(spec.conf.resources)

    def check_sweep(self, confs: Sequence[JobConf]) -> None:
        """What a single submit checks, for every job of a sweep before any is submitted: values a batch script
        can't hold, and (preflight=true) each distinct request against the cluster's partitions."""
        from hpc_ft.job import resolve
        from hpc_ft.submit.slurm import check_sbatch_values

        for conf in confs:
            conf = copy.deepcopy(conf)
            conf.resources.workers_per_node = self.workers_per_node(conf)
            check_sbatch_values(resolve(conf))
        if confs[0].preflight:
            from hpc_ft.submit.preflight import preflight

            seen = []
            for conf in confs:
                if conf.resources not in seen:
                    seen.append(conf.resources)
                    preflight(conf.resources)

    def make_executor(self, spec: JobSpec) -> Any:
        from hpc_ft.submit.slurm import make_slurm_executor

        return make_slurm_executor(spec)

    def stop_job(self, job_id: str, spec: JobSpec) -> bool:
        """``scancel --signal=SIG JOBID``: Slurm delivers the preemption signal to every node task (job steps),
        which forward it to torchrun; no busy waiting, the job's end is seen as any other's."""
        import subprocess

        from hpc_ft.node.preempt import signal_name

        sig = signal_name(spec.conf.executor.preempt_signal)[3:]
        proc = subprocess.run(["scancel", f"--signal={sig}", job_id], capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            log.warning("scancel --signal=%s %s failed: %s", sig, job_id, proc.stderr.strip())
        return proc.returncode == 0

    trial_arrays = True  # a search's trials are the tasks of one job array (%parallelism), released one by one

    def submit_held_array(self, spec: JobSpec, spec_paths: Sequence[Path], folder: Path,
                          parallelism: int) -> list[Any]:
        """One job array (``--array=0-(N-1)%parallelism``, ``--hold``) through submitit's batch: task i runs a
        SlurmNodeTask on ``spec_paths[i]``, which the search writes before it releases the task. A single
        path is one plain held job (submitit submits a batch of one as a job)."""
        from hpc_ft.submit.slurm import make_slurm_executor

        self.check_before_submit(spec)
        ex = make_slurm_executor(spec, folder=folder, hold=True, array_parallelism=parallelism)
        with ex.batch():
            jobs = [ex.submit(self.node_task_class(str(p))) for p in spec_paths]
        log.info("array %s: %d held task(s), at most %d at once", str(jobs[0].job_id).split("_")[0], len(jobs),
                 parallelism)
        return jobs

    def release_job(self, job_id: str) -> bool:
        """``scontrol release JOBID_IDX``: Slurm starts the task when the array's throttle lets it."""
        return _slurm_command(["scontrol", "release", job_id])

    def cancel_jobs(self, job_ids: Sequence[str]) -> bool:
        """``scancel JOBID_IDX ...``: tasks never released (the search needs no more trials, or cannot pay for
        them) leave the queue."""
        return _slurm_command(["scancel", *job_ids]) if job_ids else True

    def array_executor(self, spec: JobSpec, folder: Path, parallelism: int) -> Any:
        """One Slurm job array (``%parallelism``) for a batch of jobs with ``spec``'s request (a Hydra app's task
        functions: submitit's own job entry runs them)."""
        from hpc_ft.submit.slurm import make_slurm_executor

        return make_slurm_executor(spec, folder=folder, node_tasks=False, array_parallelism=parallelism)

    def submit_sweep(self, entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path, *, wait: bool,
                     poll_s: float, record_state: RecordState, record_ids: RecordIds) -> bool:
        submit_arrays(entries, parallelism, sweep_dir, self.node_task)
        record_state("submitted")
        if wait:
            gather_entries(entries, poll_s)
        return wait


def _slurm_command(argv: list[str]) -> bool:
    """Run a Slurm client command (argv, no shell); logs and returns False when it fails."""
    import subprocess

    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("%s failed: %s", " ".join(argv[:2]), exc)
        return False
    if proc.returncode != 0:
        log.warning("%s failed: %s", " ".join(argv), proc.stderr.strip())
    return proc.returncode == 0


def slurm_groups(entries: Sequence[SweepEntry]) -> list[list[SweepEntry]]:
    """Entries (in plan order) grouped by identical Slurm request; groups ordered by their first job."""
    from hpc_ft.submit.slurm import slurm_parameters

    groups: dict[str, list[SweepEntry]] = {}
    for e in entries:
        ex = e.spec.conf.executor
        key = json.dumps([slurm_parameters(e.spec), ex.preempt_signal, ex.max_requeues], sort_keys=True,
                         default=str)
        groups.setdefault(key, []).append(e)
    return list(groups.values())


def submit_arrays(entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path,
                  node_task: Callable[[JobSpec], Any]) -> None:
    """One submitit batch (a Slurm job array, %parallelism) per group; task i of an array is its i-th job.

    Each task is the executor's node task (as a single Slurm submit uses, a SlurmNodeTask): preemption
    reaches every node's torchrun.
    """
    from hpc_ft.submit.slurm import make_slurm_executor

    for k, group in enumerate(slurm_groups(entries)):
        first = group[0].spec
        ex = make_slurm_executor(first, folder=SweepDir(sweep_dir).array_submitit(k),
                                 array_parallelism=parallelism)
        with ex.batch():
            jobs = [ex.submit(node_task(e.spec)) for e in group]
        for e, job in zip(group, jobs):
            e.job = job
        log.info("array %s: %d job(s) (sweep jobs %s), at most %d at once", jobs[0].job_id.split("_")[0],
                 len(group), ", ".join(str(e.num) for e in group), parallelism)
