"""The executor protocol: everything that differs between executors, in one class per executor.

An executor (``executor.name`` in the config, ``conf/executor/<name>.yaml``) answers for:

- its config rules: workers per node, what it cannot run, what it runs differently (``validate`` asks it);
- what a dry run shows for it (the rendezvous host of a multi-node job);
- what is checked before anything is submitted (Slurm: batch-script values and the cluster's limits);
- which node task runs on each node, the submitit executor that runs it, and how submitting is wrapped;
- how a planned sweep is submitted (a job array, local processes, in-process) and whether it is waited for;
- how a search's trials start and stop: one by one, or as the held tasks of one job array (``trial_arrays``), and
  how a running one is stopped at a checkpoint (``stop_job``);
- whether the scheduler's history can estimate a sweep's queue wait (``hpc-ft plan``).

Each executor is one module of this package registered in ``hpc_ft.submit.executors``; nothing outside the
package compares executor names (tests/test_architecture.py checks it).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, ContextManager, Sequence

from hpc_ft.config.schema import JobConf
from hpc_ft.config.validate import workers_per_node
from hpc_ft.errors import Problem
from hpc_ft.job import JobSpec
from hpc_ft.node.task import NodeTask
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.lock import NO_PROBE, RunDirLock
from hpc_ft.rundir.records import NodeReport
from hpc_ft.rundir.spec import save_spec, spec_path  # noqa: F401  save_spec: the package re-exports it

# Called with the sweep's state ("running", "submitted") whenever its manifest should be rewritten.
RecordState = Callable[[str], None]
# Picklable: records scheduler ids (Hydra job number -> id) and optionally the sweep's state in its manifest,
# also from a process that outlives hpc-ft (the local executor's detached sweep driver).
RecordIds = Callable[..., None]


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


def submitit_folder(spec: JobSpec) -> Path:
    """Where submitit keeps a job's pickles and logs: the run dir's ``submitit/``."""
    return RunDir.of(spec).submitit


class Executor(ABC):
    """One executor. Subclass it in a module of ``hpc_ft.submit.executors``, set ``name`` and register it.

    The defaults describe a batch scheduler's executor that needs nothing special; override what differs.
    """

    name: ClassVar[str]  # executor.name, and the conf/executor/<name>.yaml that selects it
    # The rendezvous host a dry run shows for a multi-node job (the real one is known only on the nodes).
    first_host_hint: ClassVar[str] = "<first host of SLURM_JOB_NODELIST>"
    # Whether `hpc-ft plan` may estimate a sweep's queue wait from the scheduler's accounting (sacct).
    queue_estimate: ClassVar[bool] = False
    # With wait=false, whether the job runs on after submitting returns (so the job, not the submitter, holds
    # its run dir from then on: hpc_ft.rundir.lock). False for an executor that has run the job by then.
    detaches: ClassVar[bool] = True
    # How a later submission tells that this executor's detached job still runs, so its run dir stays held
    # (one of hpc_ft.rundir.lock.LIVENESS_PROBES: squeue for a Slurm job id, a live pid for a local process).
    liveness: ClassVar[str] = NO_PROBE
    # Whether every node of a job runs on one host (the local executor's emulated nodes): their workers then share
    # that host's CPUs, and resolve caps the threads per worker to the host's CPUs split among all of them.
    nodes_share_host: ClassVar[bool] = False
    # The node task class submitted once per node.
    node_task_class: ClassVar[type[NodeTask]] = NodeTask
    # What Ctrl-C does while hpc-ft waits for this executor's job: False, hpc-ft stops waiting and the job goes on
    # (a batch scheduler's job does not belong to the terminal); True, the job is stopped at a checkpoint, as by
    # `hpc-ft cancel`, and its results are shown (a job on this machine, as a foreground command's would be).
    interrupt_stops_job: ClassVar[bool] = False

    def stop_and_wait(self, job_ids: Sequence[str]) -> list[str]:
        """Stop these jobs at a checkpoint now and wait for them to end; one line each saying what was done.
        Needed where ``interrupt_stops_job`` is set."""
        raise NotImplementedError(f"executor {self.name} does not stop its jobs on Ctrl-C")

    # -- config rules (hpc_ft.config.validate.ExecutorRules) ------------------------------------------------
    def workers_per_node(self, conf: JobConf) -> int:
        """torchrun processes per node: as configured, else one per GPU, else 2 CPU workers."""
        return workers_per_node(conf)

    def problems(self, conf: JobConf, gpu_count: Callable[[], int]) -> list[Problem]:
        """What this executor cannot run; ``gpu_count`` counts this machine's GPUs (call it only when needed)."""
        return []

    def warnings(self, conf: JobConf) -> list[str]:
        """What this executor runs differently from the request, without refusing it."""
        return []

    # -- one job --------------------------------------------------------------------------------------------
    def submit(self, spec: JobSpec) -> Any:
        """Check the request, save the spec, submit one node task per node; returns the submitit job.

        A refused request leaves nothing behind: the checks come before job.yaml is written.
        """
        self.check_before_submit(spec)
        save_spec(spec)
        executor = self.make_executor(spec)
        with self.submitting(spec):
            return executor.submit(self.node_task(spec))

    def submit_held(self, spec: JobSpec) -> Any:
        """``submit``, with the run dir held for the job from then on (wait=false semantics: a sweep's job, a search's
        trial): the owner record names the job, so `hpc-ft status` and a later submission see it runs. A refused
        submission leaves the dir free."""
        lock = RunDirLock(Path(spec.run_dir))
        lock.acquire(self.name, self.liveness)
        try:
            job = self.submit(spec)
        except BaseException:
            lock.release()
            raise
        lock.record_job(str(job.job_id))
        lock.detach()
        return job

    def check_before_submit(self, spec: JobSpec) -> None:
        """Raise ConfigError (or SubmissionError) for a request this executor would refuse later; default: none."""

    def node_task(self, spec: JobSpec) -> NodeTask:
        """The callable submitit runs once per node, carrying (a copy of) the spec that job.yaml holds."""
        import copy

        return self.node_task_class(str(spec_path(spec)), spec=copy.deepcopy(spec))

    @abstractmethod
    def make_executor(self, spec: JobSpec) -> Any:
        """The configured submitit executor for ``spec`` (submitit imported here: it is not needed to plan)."""

    def array_executor(self, spec: JobSpec, folder: Path, parallelism: int) -> Any:
        """A submitit executor for a batch of jobs that all make ``spec``'s request, its files in ``folder``,
        at most ``parallelism`` running at once where the scheduler can bound it (a Hydra app's sweep:
        hydra_plugins.hpc_ft_launcher.app). Default: ``make_executor``'s, moved to ``folder``."""
        ex = self.make_executor(spec)
        ex.folder = Path(folder).expanduser().absolute()  # submitit reads it at each submission
        return ex

    def run_batch(self, ex: Any, calls: Sequence[Callable[[], Any]], parallelism: int, poll_s: float) -> list[Any]:
        """Submit ``calls`` to ``ex`` (an ``array_executor``) in order, at most ``parallelism`` running at once;
        returns their submitit jobs in that order. Default: one batch, bounded by the scheduler itself (Slurm:
        the job array's ``%parallelism``); ``poll_s`` (seconds) is for executors that bound it themselves."""
        with ex.batch():
            jobs = [ex.submit(call) for call in calls]
        return jobs

    def submitting(self, spec: JobSpec) -> ContextManager[Any]:
        """Wraps ``make_executor(spec).submit(...)``; default: nothing."""
        return contextlib.nullcontext()

    # -- stopping a running job early (a search's pruned trial) --------------------------------------------
    def stop_job(self, job_id: str, spec: JobSpec) -> bool:
        """Ask running job ``job_id`` to stop at its next step end with a checkpoint, through the preemption path
        (the preemption signal reaches every node's torchrun; the workers agree, checkpoint and exit 75), without
        a requeue (``RunDir.stop_request`` is written first). Returns whether the signal went out; the job's end
        is waited for as any other's. Default: this executor cannot (its jobs run to their end)."""
        return False

    # -- a search's trials as tasks of one job array -------------------------------------------------------
    # Whether a search (``hpc_ft.tune``) runs its trials as the tasks of one job array that the scheduler throttles:
    # every task is submitted held, and released once its trial's job.yaml is written, so the scheduler starts the
    # next trial as soon as one ends. False: each trial is submitted as its own job when it is to start.
    trial_arrays: ClassVar[bool] = False

    def submit_held_array(self, spec: JobSpec, spec_paths: Sequence[Path], folder: Path,
                          parallelism: int) -> list[Any]:
        """Submit one job array making ``spec``'s request, task i running the node task of ``spec_paths[i]``
        (a job.yaml that need not exist yet), every task held, at most ``parallelism`` running at once, its
        files in ``folder``. Returns one submitit job per task (ids ``ARRAY_INDEX``). Only with ``trial_arrays``."""
        raise NotImplementedError(f"executor={self.name} does not run trials as a job array")

    def release_job(self, job_id: str) -> bool:
        """Let held job (array task) ``job_id`` start; returns whether the scheduler took it."""
        raise NotImplementedError(f"executor={self.name} does not hold jobs")

    def cancel_jobs(self, job_ids: Sequence[str]) -> bool:
        """Cancel jobs (array tasks) that have not started and must not; returns whether the scheduler took it."""
        raise NotImplementedError(f"executor={self.name} does not hold jobs")

    # -- a planned sweep ------------------------------------------------------------------------------------
    def check_sweep(self, confs: Sequence[JobConf]) -> None:
        """Raise for a sweep job this executor would refuse at submission, before any job is submitted."""

    @abstractmethod
    def submit_sweep(self, entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path, *, wait: bool,
                     poll_s: float, record_state: RecordState, record_ids: RecordIds) -> bool:
        """Submit every entry in plan order, at most ``parallelism`` at once; fill ``entry.job`` and, when it
        waits, ``entry.reports`` (results.json written). Returns whether the sweep was waited for."""


def gather_entries(entries: Sequence[SweepEntry], poll_s: float) -> None:
    """Wait for every job (plan order) and gather every node's report; results.json per run dir."""
    from hpc_ft.submit.gather import gather, save_results, wait

    for e in entries:
        wait(e.job, poll_s=poll_s)
        e.reports = gather(e.job, e.spec)
        save_results(e.spec, e.reports)


def this_machine_gpu_problems(name: str, conf: JobConf, gpu_count: Callable[[], int]) -> list[Problem]:
    """An executor that runs on this machine can use only the GPUs this machine has."""
    r = conf.resources
    if r.gpus_per_node <= 0:
        return []
    have = gpu_count()
    if r.gpus_per_node <= have:
        return []
    return [Problem("resources.gpus_per_node", r.gpus_per_node,
                    f"the {name} executor runs on this machine, which has {have} GPU(s)",
                    f"pass resources.gpus_per_node={have} or executor=slurm")]
