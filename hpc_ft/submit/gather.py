"""Wait for a submitted job and bring every node's NodeReport back, failed nodes included."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from hpc_ft.job import JobSpec
from hpc_ft.rundir import records
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.records import NodeReport

ERROR_TAIL_CHARS = 4000


def wait(job: Any, poll_s: float, timeout_s: float | None = None,
         on_tick: Callable[[str, float], None] | None = None) -> None:
    """Block until ``job`` is done, reporting (state, elapsed seconds) on every tick.

    Local jobs are waited on through their controller process (no 1 s polling lag);
    others are polled every ``poll_s`` seconds, as submitit does against the scheduler. A Slurm job is done
    when every node's result file exists and Slurm no longer runs it: a requeued job's first attempt leaves
    result files that only its last run replaces (``slurm_job_active``). Raises TimeoutError after ``timeout_s``.
    """
    t0 = time.monotonic()
    proc = getattr(job, "_process", None)  # submitit LocalJob's controller process
    while True:
        if proc is not None:
            try:
                proc.wait(timeout=poll_s)
            except Exception:  # subprocess.TimeoutExpired: still running
                pass
        if job.done() and not _scheduler_runs(job):
            return
        elapsed = time.monotonic() - t0
        if timeout_s is not None and elapsed > timeout_s:
            raise TimeoutError(f"job {job.job_id} not done after {timeout_s:.0f} s")
        if on_tick is not None:
            on_tick(job.state, elapsed)
        if proc is None:
            time.sleep(poll_s)


def _scheduler_runs(job: Any) -> bool:
    """Slurm still lists the job as active (local and debug jobs: their done() is already the process's end)."""
    from submitit.slurm.slurm import SlurmJob

    if not isinstance(job, SlurmJob):
        return False
    from hpc_ft.submit.slurm import slurm_job_active

    return slurm_job_active(job)


def gather(job: Any, spec: JobSpec) -> list[NodeReport]:
    """One NodeReport per node; a node whose task crashed gets a report with its error tail."""
    reports = []
    for rank in range(spec.nodes):
        task = job.task(rank) if spec.nodes > 1 else job
        try:
            rep = task.result()
            if not isinstance(rep, NodeReport):
                raise TypeError(f"node task returned {type(rep).__name__}, not NodeReport")
        except Exception as exc:  # the task itself died: keep the others, report this one
            rep = _failed_report(spec, rank, job, task, exc)
        reports.append(rep)
        rep.save(RunDir.of(spec).node(rank).report)
    return reports


def _failed_report(spec: JobSpec, rank: int, job: Any, task: Any, exc: Exception) -> NodeReport:
    saved = RunDir.of(spec).node_report(rank)
    if saved.exists():  # the node wrote its report, then something after it failed
        rep = NodeReport.load(saved)
        if rep.exit_code != 0:
            return rep
    stderr = ""
    try:
        stderr = task.stderr() or ""
    except Exception:
        pass
    tail = (stderr or str(exc))[-ERROR_TAIL_CHARS:]
    # -1: the node task itself crashed before torchrun could report an exit status.
    return NodeReport(host="?", node_rank=rank, job_id=str(job.job_id), exit_code=-1, wall_s=0.0,
                      error_tail=tail)


def save_results(spec: JobSpec, reports: list[NodeReport]) -> Path:
    """Write run_dir/results.json: every node's report, in node order."""
    path = RunDir.of(spec).results
    records.save_results(path, reports)
    return path
