"""One trial as a running hpc_ft job: submitted into its run dir (or released as its job array's task), its
evaluations read, stopped early, ended.

A trial's run dir is held like any detached submission's (``hpc_ft.rundir.lock``: the owner record names the job
and how to tell it still runs), so a driver started again finds the job it had submitted, alive or ended, and
neither loses it nor submits it twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.rundir.atomic import atomic_write_text
from hpc_ft.rundir.evals import EvalPoint, EvalReader
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.lock import RunDirLock, detached_job_alive
from hpc_ft.rundir.records import NodeReport, RecordError, TrainResult
from hpc_ft.tune.budget import TrialSize, held_unit_hours


@dataclass
class TrialJob:
    """A submitted trial: its Optuna trial, spec, size and job (``job``: the submitit handle when this driver
    submitted it, None when it was found running by a restarted driver)."""

    trial: Any  # optuna.Trial
    spec: JobSpec
    size: TrialSize
    job_id: str
    started_unix_s: float
    job: Any = None
    reader: EvalReader = field(init=False)
    points: list[EvalPoint] = field(default_factory=list)
    stop_requested_at: int | None = None  # the step whose evaluation the pruner stopped it after
    reported: set[int] = field(default_factory=set)  # steps already reported to Optuna (before a restart too)

    def __post_init__(self) -> None:
        self.reader = EvalReader(RunDir.of(self.spec).metrics)

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def run_dir(self) -> Path:
        return Path(self.spec.run_dir)

    def elapsed_s(self) -> float:
        return max(0.0, time.time() - self.started_unix_s)

    def held_unit_hours(self) -> float:
        return held_unit_hours(self.size, self.elapsed_s())

    def new_points(self) -> list[EvalPoint]:
        pts = self.reader.new_points()
        self.points += pts
        return pts

    def process(self) -> Any:
        """The local controller process to wait on (None for a scheduler's job or a re-attached one)."""
        return getattr(self.job, "_process", None) if self.job is not None else None

    def ended(self) -> bool:
        """Whether the job has ended: its controller process (local) or the scheduler says so (owner record)."""
        if self.process() is not None:
            return self.job.done()
        alive = detached_job_alive(RunDirLock(self.run_dir).read_owner() or _no_owner())
        return alive is False

    def request_stop(self) -> bool:
        """Stop at the next step end with a checkpoint (the preemption path), not to be requeued."""
        from hpc_ft.submit.executors import executor_of

        atomic_write_text(RunDir.of(self.spec).stop_request, f"{self.stop_requested_at}\n")
        return executor_of(self.spec).stop_job(self.job_id, self.spec)


def _no_owner():
    from hpc_ft.rundir.lock import LockOwner

    return LockOwner(0, "", "", 0.0)


def submit_trial(spec: JobSpec) -> tuple[Any, str]:
    """Submit ``spec`` (wait=false semantics) holding its run dir for the job; returns (submitit job, job id)."""
    from hpc_ft.submit.executors import executor_of

    job = executor_of(spec).submit_held(spec)  # the job holds its run dir from now on; a restarted driver reads who
    return job, str(job.job_id)


def release_trial(spec: JobSpec, task_id: str) -> str:
    """Start ``spec`` as held array task ``task_id`` (which runs its job.yaml): check the request, hold the run dir
    for the task, write job.yaml, then release the task. Returns ``task_id``; SubmissionError when the scheduler
    refuses the release (the run dir is left to the task, which no longer exists then)."""
    from hpc_ft.errors import SubmissionError
    from hpc_ft.rundir.spec import save_spec
    from hpc_ft.submit.executors import executor_of

    ex = executor_of(spec)
    ex.check_before_submit(spec)
    lock = RunDirLock(Path(spec.run_dir))
    lock.acquire(spec.conf.executor.name, ex.liveness)
    try:
        save_spec(spec)
        lock.record_job(task_id)
    except BaseException:
        lock.release()
        raise
    lock.detach()  # the task holds its run dir from now on; a restarted driver reads who
    if not ex.release_job(task_id):
        raise SubmissionError(f"the scheduler did not release array task {task_id} (was it cancelled?)")
    return task_id


def submitted_job_id(run_dir: Path) -> str | None:
    """The job a driver submitted into ``run_dir`` (its owner record), or None if none was."""
    owner = RunDirLock(run_dir).read_owner()
    return owner.job_id if owner is not None and owner.job_id else None


@dataclass
class TrialOutcome:
    """What a trial left: its node reports (missing nodes left out), the training result, unit-hours spent."""

    reports: list[NodeReport]
    train: TrainResult | None
    unit_hours: float
    error: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.reports) and all(r.ok for r in self.reports)

    @property
    def preempted(self) -> bool:
        return any(r.preempted for r in self.reports) or bool(self.train and self.train.preempted)

    def trained_to(self, max_steps: int) -> bool:
        """Whether training ran every step to ``max_steps`` and stopped there, not at a preemption checkpoint:
        every node's train.json (or the one found) says so."""
        trains = [r.train for r in self.reports if r.train is not None] or ([self.train] if self.train else [])
        return bool(trains) and all(not tr.preempted and tr.steps >= max_steps for tr in trains)


def verdict(out: TrialOutcome, max_steps: int, stop_requested: bool, has_value: bool) -> str:
    """How an ended trial is told to Optuna: "complete", "pruned" or "failed". ``has_value``: it reported the
    search's metric. A trial the pruner asked to stop is pruned only if it really stopped early: a short trial
    can train to ``max_steps`` before the stop reaches it, and then it is complete, with its final evaluation.
    Its exit status is not asked then, as the late signal can end its torchrun non-zero after the workers
    finished."""
    finished = out.trained_to(max_steps)
    if stop_requested and not finished:
        return "pruned"
    if has_value and (out.ok or (stop_requested and finished)):
        return "complete"
    return "failed"


def outcome(t: TrialJob) -> TrialOutcome:
    """Gather the ended trial: with its submitit job every node's report (a crashed node's with its error tail,
    results.json written); without it the reports its nodes wrote. Unit-hours from the reports' wall times."""
    rd = RunDir.of(t.spec)
    reports: list[NodeReport] = []
    if t.job is not None:
        from hpc_ft.submit.gather import gather, save_results

        reports = gather(t.job, t.spec)
        save_results(t.spec, reports)
    else:
        for r in range(t.spec.nodes):
            try:
                reports.append(NodeReport.load(rd.node_report(r)))
            except (OSError, RecordError):
                continue
    train = next((r.train for r in reports if r.train is not None), None)
    if train is None:
        try:
            train = TrainResult.load(rd.node(0).train_result)
        except (OSError, RecordError):
            train = None
    per_node = t.size.units / max(1, t.spec.nodes)
    if len(reports) == t.spec.nodes and all(r.wall_s for r in reports):
        hours = sum(r.wall_s for r in reports) / 3600.0 * per_node
    else:  # a node left no report: count the trial's whole time on every node
        hours = t.elapsed_s() / 3600.0 * t.size.units
    error = next((r.error_tail.strip().splitlines()[-1] for r in reports if not r.ok and r.error_tail.strip()), "")
    return TrialOutcome(reports=reports, train=train, unit_hours=hours, error=error)
