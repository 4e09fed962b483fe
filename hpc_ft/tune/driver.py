"""The search driver: Optuna proposes, each trial runs as an hpc_ft job, the pruner stops bad ones early.

Asynchronous: whenever a trial ends (completed, pruned or failed) the next one starts on what it freed, up to
the parallelism and the budget (``hpc_ft.tune.budget``); there is no batch barrier. How a trial starts is the
executor's: the local executor submits each trial as its own job when it is to start; an executor with
``trial_arrays`` (Slurm) runs the trials as the tasks of one job array, throttled to the parallelism and
submitted held (``hpc_ft.tune.array``): the driver writes a trial's job.yaml, then releases its task, keeping up
to the parallelism released ahead, so the scheduler starts the next trial as soon as one ends; tasks the search
does not use are cancelled. Each running trial's evaluations are read from its ``metrics.jsonl`` as they are
appended and reported to Optuna; when the pruner says so the trial is stopped through the preemption path
(``Executor.stop_job``: it checkpoints and exits without a requeue, its resources go to the next trial). The
study lives in ``SWEEP_DIR/tune.journal`` (Optuna's JournalStorage, one file); the same command run again with
the same ``hydra.sweep.dir`` continues the same study: trials still running are re-attached through their run
dirs' owner records, a trial proposed but never started is started, none is started twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hpc_ft.errors import ConfigError, Problem
from hpc_ft.job import JobSpec
from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.submit.executors import executor_of
from hpc_ft.tune.array import ArrayRecord, array_trials, in_flight_limit, tasks_to_cancel
from hpc_ft.tune.budget import TrialSize, TuneBudget, may_start, parallelism
from hpc_ft.tune.settings import make_pruner, make_sampler
from hpc_ft.tune.space import SearchSpace
from hpc_ft.tune.trials import TrialJob, outcome, release_trial, submit_trial, submitted_job_id, verdict

log = logging.getLogger(__name__)

STUDY_NAME = "hpc_ft"
# User attributes of a trial in the study (what a restarted driver and the report read).
RUN_DIR, OVERRIDES, JOB_ID, STARTED, UNITS, UNIT_HOURS, STEPS, ERROR, STOPPED_AT = (
    "run_dir", "overrides", "job_id", "started_unix_s", "units", "unit_hours", "steps", "error", "stopped_at_step")
BUDGET, BUDGET_UNIT = "budget_unit_hours", "budget_unit"  # the study's: its unit-hours limit (None: none), GPU|node
ARRAY = "job_array"  # the study's: its current job array (hpc_ft.tune.array.ArrayRecord), for a restarted driver


def open_study(sweep_dir: Path, conf: Any, space: SearchSpace, create: bool = True) -> Any:
    """The study in ``sweep_dir``'s journal file, created or loaded (same name, same direction)."""
    import optuna

    storage = journal_storage(SweepDir(sweep_dir).tune_journal)
    return optuna.create_study(study_name=STUDY_NAME, storage=storage, load_if_exists=True,
                               direction=conf.tune.direction, sampler=make_sampler(conf, space.grid),
                               pruner=make_pruner(conf))


def journal_storage(path: Path) -> Any:
    """Optuna's JournalStorage on one file (the file backend's name moved in Optuna 4)."""
    import optuna

    path.parent.mkdir(parents=True, exist_ok=True)
    journal = optuna.storages.journal if hasattr(optuna.storages, "journal") else None
    backend_cls = getattr(journal, "JournalFileBackend", None) or optuna.storages.JournalFileStorage
    return optuna.storages.JournalStorage(backend_cls(str(path)))


@dataclass
class Driver:
    """One search: ``compose(overrides, run_dir) -> JobSpec`` builds a validated trial; ``say`` prints a line."""

    sweep_dir: Path
    conf: Any  # the JobConf every trial shares its tune.*, sched.* and resources.* with
    space: SearchSpace
    compose: Callable[[list[str], Path], JobSpec]
    say: Callable[[str], None] = print
    running: dict[int, TrialJob] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.size = TrialSize.of(self.conf)
        self.budget = TuneBudget.of(self.conf)
        self.parallelism = parallelism(self.conf, self.size)
        self.total = self.conf.tune.trials
        if self.conf.tune.sampler == "grid":
            n = 1
            for values in self.space.grid.values():
                n *= len(values)
            self.total = min(self.total, n)
        self.study = open_study(self.sweep_dir, self.conf, self.space)
        self.executor = executor_of(self.conf)
        self.arrays = self.executor.trial_arrays
        self.in_flight = in_flight_limit(self.parallelism, self.arrays)
        self.array: ArrayRecord | None = None  # the array this driver releases trials into
        self.array_jobs: dict[str, Any] = {}  # its submitit jobs by task id (gathered when a trial ends)
        self.unstarted: list[int] = []  # trials proposed before a restart and never started: started first
        self.poll_s = float(self.conf.tune.poll_interval_s)
        self.metric = self.conf.tune.metric
        self.wait_s = 0.0  # time spent waiting on trials; the rest of run() is the driver's own overhead

    # -- the loop ----------------------------------------------------------------------------------------------
    def run(self) -> Any:
        """Run the search to its end (trials done, or the budget spent); returns the study."""
        # What the report sets the spending against (the study's own record of its budget).
        self.study.set_user_attr(BUDGET, self.budget.unit_hours)
        self.study.set_user_attr(BUDGET_UNIT, self.budget.unit)
        self._reattach()
        try:
            while True:
                self._start_what_fits()
                if not self.running:
                    break
                self._wait()
                for t in list(self.running.values()):
                    self._observe(t)
                    if t.ended():
                        self._finish(t)
        finally:  # also when stopped (Ctrl-C, an error): the running trials go on, no unstarted task may run
            self._cancel_unstarted()
        return self.study

    def spent_unit_hours(self) -> float:
        """Unit-hours of the finished trials, as their reports measured them."""
        import optuna

        done = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                             optuna.trial.TrialState.PRUNED,
                                                             optuna.trial.TrialState.FAIL))
        return sum(float(t.user_attrs.get(UNIT_HOURS, 0.0)) for t in done)

    def _start_what_fits(self) -> None:
        """Start trials up to ``in_flight`` (with an array: released ahead too, each held at its planned size
        in the budget) while the budget pays for them."""
        import optuna

        while len(self.running) < self.in_flight and (self.unstarted or len(self.study.trials) < self.total):
            held = sum(t.held_unit_hours() for t in self.running.values())
            if not may_start(self.budget, self.size, self.spent_unit_hours(), held):
                if not self.running:
                    self.say(f"budget spent: {self.spent_unit_hours():.4f} of {self.budget.unit_hours:g} "
                             f"{self.budget.unit}-hours; a trial plans {self.size.unit_hours:.4f}")
                return
            if self.unstarted:  # proposed before a restart: its parameters are in the study
                ft = self.study.trials[self.unstarted.pop(0)]
                self._submit(optuna.trial.Trial(self.study, ft._trial_id))
            else:
                self._submit(self.study.ask(fixed_distributions=self.space.params))

    def _submit(self, trial: Any) -> None:
        import optuna

        overrides = self.space.overrides(trial.params)
        run_dir = self.sweep_dir / str(trial.number)
        trial.set_user_attr(RUN_DIR, str(run_dir))
        trial.set_user_attr(OVERRIDES, overrides)
        try:
            spec = self.compose(overrides, run_dir)
            if self.arrays:
                job_id = release_trial(spec, self._task_for(trial.number, spec))
                job = self.array_jobs.get(job_id)
            else:
                job, job_id = submit_trial(spec)
        except Exception as exc:  # noqa: BLE001 - one trial's refusal or failed submission fails that trial
            trial.set_user_attr(ERROR, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            self._tell(trial, state=optuna.trial.TrialState.FAIL)
            self.say(f"trial {trial.number} failed to start: {exc}")
            if isinstance(exc, ConfigError):
                raise
            return
        started = time.time()
        trial.set_user_attr(JOB_ID, job_id)
        trial.set_user_attr(STARTED, started)
        trial.set_user_attr(UNITS, self.size.units)
        self.running[trial.number] = TrialJob(trial, spec, self.size, job_id, started, job=job)
        self.say(f"trial {trial.number} started: job {job_id}, {' '.join(overrides[len(self.space.fixed):])}")

    # -- the job array (executors with trial_arrays) ------------------------------------------------------------
    def _task_for(self, number: int, spec: JobSpec) -> str:
        """The held array task that runs trial ``number``: this driver's array's, else a new array's (for this
        trial, the ones proposed but never started, and every one still to be proposed; ``spec`` makes the
        request all of them share). The record goes into the study before any task is released."""
        task = self.array.task_of(number) if self.array is not None else None
        if task is not None:
            return task
        self._cancel_unstarted()  # an array whose tasks no longer match the study's numbering (not expected)
        numbers = array_trials([*self.unstarted, number], len(self.study.trials), self.total)
        paths = [RunDir(self.sweep_dir / str(n)).spec for n in numbers]
        jobs = self.executor.submit_held_array(spec, paths, SweepDir(self.sweep_dir).array_submitit(numbers[0]),
                                               self.parallelism)
        self.array = ArrayRecord(trials=tuple(numbers), task_ids=tuple(str(j.job_id) for j in jobs))
        self.array_jobs.update(zip(self.array.task_ids, jobs))
        self.study.set_user_attr(ARRAY, self.array.to_dict())
        self.say(f"job array {self.array.task_ids[0].split('_')[0]}: {len(numbers)} held task(s) for trials "
                 f"{numbers[0]}-{numbers[-1]}, {self.parallelism} at once")
        return self.array.task_of(number)  # type: ignore[return-value]

    def _cancel_unstarted(self) -> None:
        """Cancel the array's tasks whose trial was never given its job.yaml: the search has its trials, cannot
        pay for more, or stops here (a restarted driver submits a new array for what is left). A task whose
        job.yaml was written is kept, released or not: a restarted driver releases it."""
        if self.array is None:
            return
        started = {n for n in self.array.trials if RunDir(self.sweep_dir / str(n)).spec.exists()}
        cancel = tasks_to_cancel(self.array, started)
        if cancel:
            self.executor.cancel_jobs(cancel)
            self.say(f"cancelled {len(cancel)} unused task(s) of job array {cancel[0].split('_')[0]}")
        self.array = None
        self.study.set_user_attr(ARRAY, None)

    def _reattach(self) -> None:
        """Trials the study holds as running (a driver stopped before they ended): find their jobs again. With a
        job array: a trial whose job.yaml was written is released (again: releasing is idempotent); the stopped
        driver's array's other tasks are cancelled and its trials proposed but never started go to a new array."""
        import optuna

        if self.arrays:
            self.array = ArrayRecord.from_dict(self.study.user_attrs.get(ARRAY))
        for ft in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            trial = optuna.trial.Trial(self.study, ft._trial_id)
            run_dir = Path(ft.user_attrs.get(RUN_DIR, self.sweep_dir / str(ft.number)))
            job_id = submitted_job_id(run_dir) if RunDir(run_dir).spec.exists() else None
            if job_id is None and self.arrays:
                self.say(f"trial {ft.number}: proposed before the driver stopped, starting it in a new array")
                self.unstarted.append(ft.number)
                continue
            if job_id is None:  # proposed, never submitted: submit it now (its parameters are in the study)
                self.say(f"trial {ft.number}: proposed before the driver stopped, submitting it now")
                self._submit(trial)
                continue
            if self.arrays and not ft.user_attrs.get(JOB_ID):  # written, maybe not released: release it
                self.executor.release_job(job_id)
                trial.set_user_attr(JOB_ID, job_id)
                trial.set_user_attr(STARTED, time.time())
                trial.set_user_attr(UNITS, self.size.units)
            spec = JobSpec.load(RunDir(run_dir).spec)
            started = float(ft.user_attrs.get(STARTED, RunDir(run_dir).spec.stat().st_mtime))
            t = TrialJob(trial, spec, self.size, job_id, started, reported=set(ft.intermediate_values))
            if ft.user_attrs.get(STOPPED_AT) is not None:
                t.stop_requested_at = int(ft.user_attrs[STOPPED_AT])
            self.running[ft.number] = t
            self.say(f"trial {ft.number}: re-attached to job {job_id}")
        self._cancel_unstarted()  # the stopped driver's array: no task of it starts from now on

    # -- one trial ---------------------------------------------------------------------------------------------
    def _wait(self) -> None:
        """Wait up to one poll interval, returning early when a local trial's controller process ends."""
        t0 = time.monotonic()
        try:
            self._wait_once()
        finally:
            self.wait_s += time.monotonic() - t0

    def _wait_once(self) -> None:
        procs = [p for p in (t.process() for t in self.running.values()) if p is not None]
        if not procs:
            time.sleep(self.poll_s)
            return
        deadline = time.monotonic() + self.poll_s
        while time.monotonic() < deadline:
            for p in procs:
                try:
                    p.wait(timeout=max(0.01, self.poll_s / (4 * len(procs))))
                    return
                except Exception:  # subprocess.TimeoutExpired: still running
                    continue

    def _observe(self, t: TrialJob) -> None:
        """Report the trial's new evaluations to Optuna; stop it when the pruner says so."""
        for point in t.new_points():
            if self.metric not in point.metrics:
                raise ConfigError([Problem("tune.metric", self.metric,
                                           f"is not an eval metric of this task (trial {t.number} reports "
                                           f"{', '.join(sorted(point.metrics)) or 'none'})",
                                           f"pass tune.metric={next(iter(sorted(point.metrics)), 'eval_loss')}")])
            if t.stop_requested_at is not None or point.step in t.reported:
                continue  # stopping already, or reported before the driver was restarted
            t.reported.add(point.step)
            t.trial.report(point.metrics[self.metric], point.step)
            if point.step < t.spec.conf.train.max_steps and t.trial.should_prune():
                t.stop_requested_at = point.step
                t.trial.set_user_attr(STOPPED_AT, point.step)
                sent = t.request_stop()
                self.say(f"trial {t.number} pruned after step {point.step} "
                         f"({self.metric} {point.metrics[self.metric]:.4g}): "
                         + ("asking it to stop at a checkpoint" if sent else "it was already ending"))

    def _finish(self, t: TrialJob) -> None:
        import optuna

        out = outcome(t)
        self.running.pop(t.number)
        t.new_points()  # evaluations written after the last poll: the final one is the trial's value
        steps = out.train.steps if out.train is not None else (t.points[-1].step if t.points else 0)
        t.trial.set_user_attr(UNIT_HOURS, out.unit_hours)
        t.trial.set_user_attr(STEPS, steps)
        values = [p.metrics[self.metric] for p in t.points if self.metric in p.metrics]
        state = verdict(out, t.spec.conf.train.max_steps, t.stop_requested_at is not None, bool(values))
        if state == "pruned":
            self._tell(t.trial, state=optuna.trial.TrialState.PRUNED)
            self.say(f"trial {t.number} stopped at step {steps} ({out.unit_hours:.4f} {self.budget.unit}-hours)")
        elif state == "complete":
            late = t.stop_requested_at is not None
            if late:  # trained on past the prune point: its curve goes to Optuna whole, as a completed trial's
                t.trial.set_user_attr(STOPPED_AT, None)
                self._report_rest(t)
            self._tell(t.trial, values[-1])
            self.say(f"trial {t.number} complete: {self.metric} {values[-1]:.4g} at step {steps}"
                     + (" (it finished before the stop took effect)" if late else ""))
        else:
            why = out.error or ("no evaluation reported" if out.ok else "preempted and not resumed"
                                if out.preempted else "the job failed")
            t.trial.set_user_attr(ERROR, why)
            self._tell(t.trial, state=optuna.trial.TrialState.FAIL)
            self.say(f"trial {t.number} failed: {why}")

    def _report_rest(self, t: TrialJob) -> None:
        """Report the evaluations the driver held back once it had asked ``t`` to stop."""
        for point in t.points:
            if self.metric in point.metrics and point.step not in t.reported:
                t.reported.add(point.step)
                t.trial.report(point.metrics[self.metric], point.step)

    def _tell(self, trial: Any, value: float | None = None, state: Any = None) -> None:
        """``study.tell``. Optuna's GridSampler asks the study to stop once the last grid point has been told,
        which raises outside ``study.optimize`` after the trial is stored; here the search ends by its count."""
        try:
            self.study.tell(trial, value, state=state)
        except RuntimeError as exc:
            if "stop" not in str(exc).lower():
                raise

    def stop_all(self) -> None:
        """Ask every running trial to stop at a checkpoint (the search is ending early); with a job array, its
        unstarted tasks are cancelled."""
        self._cancel_unstarted()
        for t in self.running.values():
            if t.stop_requested_at is None:
                t.stop_requested_at = t.points[-1].step if t.points else 0
                t.trial.set_user_attr(STOPPED_AT, t.stop_requested_at)
                t.request_stop()
