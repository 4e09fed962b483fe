"""Submit a planned sweep and bring every node's report of every job back. The side-effect half of a sweep.

- slurm: one job array per group of jobs with the same resource request, tasks in plan order, ``%parallelism``;
  each array task is the full spine (one NodeTask per node, ``nodes`` x 1 task).
- local: one submitit LocalExecutor job per sweep job, at most ``parallelism`` at once, started in plan order;
  with wait=false a detached local driver job does the same after hpc-ft returns.
- debug: in-process, one job after the other.

The sweep dir gets ``manifest.json`` (the plan, every job's run dir and scheduler id, later its outcome); every run
dir gets ``job.yaml``, ``nodes/node_{r}.json`` (written by each node) and, once gathered, ``results.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from hpc_ft.job import JobSpec, atomic_write_text
from hpc_ft.node.result import NodeReport

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


@dataclass
class SweepEntry:
    """One sweep job as submitted: its Hydra number, spec and submitit job (None until submitted)."""

    num: int
    spec: JobSpec
    order_index: int  # position in the plan's submission order
    job: Any = None
    reports: list[NodeReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.reports) and all(r.ok for r in self.reports)


# -- the manifest -------------------------------------------------------------------------------------------
def write_manifest(sweep_dir: Path, plan: dict[str, Any], entries: Sequence[SweepEntry], *, executor: str,
                   wait: bool, state: str) -> Path:
    """Write sweep_dir/manifest.json atomically: the plan and, per job, run dir, scheduler id and outcome."""
    jobs = []
    for e in sorted(entries, key=lambda e: e.num):
        jobs.append({"num": e.num, "run_dir": str(e.spec.run_dir), "overrides": list(e.spec.overrides),
                     "order_index": e.order_index, "nodes": e.spec.nodes,
                     "gpus_per_node": e.spec.conf.resources.gpus_per_node,
                     "job_id": None if e.job is None else str(e.job.job_id),
                     "node_reports": [str(Path("nodes") / f"node_{r}.json") for r in range(e.spec.nodes)],
                     "ok": e.ok if e.reports else None})
    path = Path(sweep_dir) / MANIFEST
    atomic_write_text(path, json.dumps({"executor": executor, "wait": wait, "state": state, "plan": plan,
                                        "jobs": jobs}, indent=1, default=str))
    return path


def set_job_ids(sweep_dir: Path, ids: dict[int, str], state: str | None = None) -> None:
    """Record scheduler ids (and the sweep's state) in an existing manifest."""
    path = Path(sweep_dir) / MANIFEST
    data = json.loads(path.read_text())
    for j in data["jobs"]:
        if j["num"] in ids:
            j["job_id"] = ids[j["num"]]
    if state is not None:
        data["state"] = state
    atomic_write_text(path, json.dumps(data, indent=1, default=str))


# -- submission ---------------------------------------------------------------------------------------------
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


def submit_slurm(entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path) -> None:
    """One submitit batch (a Slurm job array, %parallelism) per group; task i of an array is its i-th job.

    Each task is a SlurmNodeTask (as a single Slurm submit uses): preemption reaches every node's torchrun.
    """
    from hpc_ft.node.slurm_task import SlurmNodeTask
    from hpc_ft.submit.slurm import make_slurm_executor

    for k, group in enumerate(slurm_groups(entries)):
        first = group[0].spec
        ex = make_slurm_executor(first, folder=Path(sweep_dir) / ".submitit" / f"array{k}",
                                 array_parallelism=parallelism)
        with ex.batch():
            jobs = [ex.submit(SlurmNodeTask(str(e.spec.spec_path))) for e in group]
        for e, job in zip(group, jobs):
            e.job = job
        log.info("array %s: %d job(s) (sweep jobs %s), at most %d at once", jobs[0].job_id.split("_")[0],
                 len(group), ", ".join(str(e.num) for e in group), parallelism)


def run_local(entries: Sequence[SweepEntry], parallelism: int, poll_s: float,
              on_submit: Callable[[SweepEntry], None] | None = None) -> None:
    """Run local jobs in plan order, at most ``parallelism`` at once; returns when all are done."""
    from hpc_ft.submit.dispatch import submit

    pending, running = list(entries), []
    while pending or running:
        while pending and len(running) < parallelism:
            e = pending.pop(0)
            e.job = submit(e.spec)
            running.append(e)
            if on_submit is not None:
                on_submit(e)
        _wait_any([e.job for e in running], poll_s)
        running = [e for e in running if not e.job.done()]


def _wait_any(jobs: Sequence[Any], poll_s: float) -> None:
    """Block until one of ``jobs`` is done; local jobs are waited on through their controller process."""
    while True:
        for job in jobs:
            if job.done():
                return
        procs = [getattr(j, "_process", None) for j in jobs]
        if all(p is not None for p in procs):
            slice_s = max(0.01, poll_s / len(procs))
            for p in procs:
                try:
                    p.wait(timeout=slice_s)
                    return
                except Exception:  # subprocess.TimeoutExpired: still running
                    continue
        else:
            time.sleep(poll_s)


def gather_entries(entries: Sequence[SweepEntry], poll_s: float) -> None:
    """Wait for every job (plan order) and gather every node's report; results.json per run dir."""
    from hpc_ft.submit.gather import gather, save_results, wait

    for e in entries:
        wait(e.job, poll_s=poll_s)
        e.reports = gather(e.job, e.spec)
        save_results(e.spec, e.reports)


@dataclass
class LocalSweepDriver:
    """Runs a local sweep detached from hpc-ft (wait=false): the same schedule, then gathers every job.

    Picklable: submitit ships it to its own local process. Arguments are run dirs' job.yaml paths in plan order.
    """

    sweep_dir: str
    spec_paths: list[str]
    nums: list[int]
    parallelism: int
    poll_s: float = 1.0

    def __call__(self) -> dict[int, bool]:
        entries = [SweepEntry(num, JobSpec.load(p), i) for i, (num, p) in enumerate(zip(self.nums, self.spec_paths))]

        def record(e: SweepEntry) -> None:
            set_job_ids(Path(self.sweep_dir), {e.num: str(e.job.job_id)})

        run_local(entries, self.parallelism, self.poll_s, on_submit=record)
        gather_entries(entries, self.poll_s)
        set_job_ids(Path(self.sweep_dir), {}, state="finished")
        return {e.num: e.ok for e in entries}


def submit_local_detached(entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path) -> Any:
    """Start a LocalSweepDriver as a submitit local job; returns its job."""
    import submitit

    from hpc_ft.submit.executors import local_controller_output

    folder = Path(sweep_dir) / ".submitit" / "driver"
    ex = submitit.LocalExecutor(folder=folder)
    total_min = sum(e.spec.conf.resources.timeout_min for e in entries) + 5  # worst case: one after another
    ex.update_parameters(timeout_min=total_min)
    poll_s = min(e.spec.conf.executor.poll_interval_s for e in entries)
    with local_controller_output(folder / "controller.log"):
        return ex.submit(LocalSweepDriver(str(sweep_dir), [str(e.spec.spec_path) for e in entries],
                                          [e.num for e in entries], parallelism, poll_s))


def run_debug(entries: Sequence[SweepEntry]) -> None:
    """The debug executor trains in this process: one job after the other, in plan order."""
    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather, save_results

    for e in entries:
        e.job = submit(e.spec)
        e.reports = gather(e.job, e.spec)
        save_results(e.spec, e.reports)
