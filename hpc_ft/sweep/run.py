"""Submit a planned sweep and bring every node's report of every job back. The side-effect half of a sweep.

How the jobs are submitted and whether they are waited for is the executor's (``Executor.submit_sweep`` in
``hpc_ft.submit.executors``: a Slurm job array, local processes, or in-process one after the other).

The sweep dir gets ``manifest.json`` (the plan, every job's run dir and scheduler id, later its outcome) and
``plan.txt``; every run dir gets ``job.yaml``, ``nodes/node{r}/node_report.json`` (written by each node) and, once
gathered, ``results.json``.

A sweeper may launch one sweep in batches (Hydra's Optuna sweeper: ``hydra.sweeper.n_jobs`` trials at a time), each
planned and submitted on its own, its jobs numbered on from the last batch's. A later batch (``continues``) adds
its jobs to the manifest beside the earlier batches' (kept as they were recorded: ids, outcomes) and its plan to
plan.txt after theirs; the manifest's ``plan`` is the latest batch's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from hpc_ft.job import JobSpec
from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.records import ManifestJob, SweepManifest
from hpc_ft.submit.executors import SweepEntry


# -- the manifest -------------------------------------------------------------------------------------------
def write_manifest(sweep_dir: Path, plan: dict[str, Any], entries: Sequence[SweepEntry], *, executor: str,
                   wait: bool, state: str, continues: bool = False) -> Path:
    """Write sweep_dir/manifest.json atomically: the plan and, per job, run dir, scheduler id and outcome.

    ``continues``: ``entries`` are a later batch of the sweep, listed after the jobs the manifest holds already;
    else they are the whole manifest (a new sweep, even in a dir that held another)."""
    jobs = [ManifestJob(num=e.num, run_dir=str(e.spec.run_dir), overrides=list(e.spec.overrides),
                        order_index=e.order_index, nodes=e.spec.nodes,
                        gpus_per_node=e.spec.conf.resources.gpus_per_node,
                        job_id=None if e.job is None else str(e.job.job_id),
                        node_reports=[str(_relative_report(e.spec, r)) for r in range(e.spec.nodes)],
                        ok=e.ok if e.reports else None)
            for e in sorted(entries, key=lambda e: e.num)]
    path = SweepDir(sweep_dir).manifest
    if continues:
        batch = {j.num for j in jobs}
        jobs = sorted([j for j in _recorded_jobs(path) if j.num not in batch] + jobs, key=lambda j: j.num)
    SweepManifest(executor=executor, wait=wait, state=state, plan=plan, jobs=jobs).save(path)
    return path


def _recorded_jobs(path: Path) -> list[ManifestJob]:
    """The jobs an existing manifest lists; none when there is no manifest (or none this hpc_ft reads)."""
    try:
        return SweepManifest.load(path).jobs
    except (OSError, ValueError):  # RecordError is a ValueError
        return []


def write_plan(sweep_dir: Path, table: str, nums: Sequence[int], *, continues: bool = False) -> Path:
    """Write sweep_dir/plan.txt atomically: ``table``, the plan of jobs ``nums``; with ``continues`` (a later batch)
    after the earlier batches' plans, under a line naming this batch's jobs."""
    from hpc_ft.rundir.atomic import atomic_write_text

    path = SweepDir(sweep_dir).plan
    text = table + "\n"
    if continues and path.exists():
        first, last = min(nums), max(nums)
        span = f"job {first}" if first == last else f"jobs {first}-{last}"
        text = f"{path.read_text()}\n--- {span}: a later batch of the sweeper's, planned on its own ---\n{text}"
    atomic_write_text(path, text)
    return path


def _relative_report(spec: JobSpec, rank: int) -> Path:
    """Node ``rank``'s report path relative to the run dir (what the manifest lists)."""
    rd = RunDir.of(spec)
    return rd.node(rank).report.relative_to(rd.path)


def set_job_ids(sweep_dir: Path, ids: dict[int, str], state: str | None = None) -> None:
    """Record scheduler ids (and the sweep's state) in an existing manifest."""
    path = SweepDir(sweep_dir).manifest
    manifest = SweepManifest.load(path)
    for j in manifest.jobs:
        if j.num in ids:
            j.job_id = ids[j.num]
    if state is not None:
        manifest.state = state
    manifest.save(path)


@dataclass
class ManifestIds:
    """Records scheduler ids (and the sweep's state) in sweep_dir/manifest.json; picklable, so the local
    executor's detached sweep driver records them after hpc-ft returns."""

    sweep_dir: str

    def __call__(self, ids: dict[int, str], state: str | None = None) -> None:
        set_job_ids(Path(self.sweep_dir), ids, state)


def submit_sweep(entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path, *, plan: dict[str, Any],
                 executor: str, wait: bool, poll_s: float, continues: bool = False) -> bool:
    """Submit the planned ``entries`` (plan order) through their executor, keeping the manifest current
    (``continues``: they are a later batch of the sweep, see ``write_manifest``).

    Returns whether the sweep was waited for (then every entry holds its node reports).
    """
    from hpc_ft.submit.executors import executor_named

    def record(state: str) -> None:  # manifest.json: what `hpc-ft report SWEEP_DIR` reads later
        write_manifest(sweep_dir, plan, entries, executor=executor, wait=wait, state=state, continues=continues)

    record("submitting")
    waited = executor_named(executor).submit_sweep(entries, parallelism, sweep_dir, wait=wait, poll_s=poll_s,
                                                   record_state=record, record_ids=ManifestIds(str(sweep_dir)))
    record("finished" if waited else "submitted")
    return waited
