"""executor=local: submitit's LocalExecutor, one process per emulated node on this machine.

A sweep runs its jobs as local processes, at most the plan's parallelism at once; with wait=false a detached
driver (itself a submitit local job) runs the same schedule after hpc-ft returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from hpc_ft.rundir.lock import PROCESS
from hpc_ft.config.schema import JobConf
from hpc_ft.errors import Problem
from hpc_ft.job import JobSpec
from hpc_ft.rundir.layout import SweepDir, controller_log
from hpc_ft.rundir.spec import spec_path
from hpc_ft.submit.executors.base import (Executor, RecordIds, RecordState, SweepEntry, gather_entries,
                                          submitit_folder, this_machine_gpu_problems)

log = logging.getLogger(__name__)


def local_parameters(spec: JobSpec) -> dict[str, Any]:
    """submitit LocalExecutor parameters: one task per emulated node on this machine."""
    r = spec.conf.resources
    return {"timeout_min": r.timeout_min, "tasks_per_node": r.nodes, "gpus_per_node": r.gpus_per_node,
            "signal_delay_s": spec.conf.executor.preempt_signal_delay_s}


def _submitit_local(spec: JobSpec, folder: Path, python: str | None) -> Any:
    """submitit's LocalExecutor for ``spec`` in ``folder``; ``python``: its job command (None: submitit's own)."""
    import submitit

    ex = submitit.LocalExecutor(folder=folder, python=python)
    ex.update_parameters(**local_parameters(spec))
    return ex


@contextlib.contextmanager
def local_controller_output(log_path: Path) -> Iterator[None]:
    """Point file descriptors 1 and 2 at ``log_path`` while a LocalExecutor submits.

    submitit's local controller is a child process that outlives hpc-ft and inherits its stdout and
    stderr: a pipe it holds (``hpc-ft submit wait=false | tee log``) would keep the reader waiting
    until the job ends. The jobs' own output goes to submitit's per-task logs either way.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(target, 1)
        os.dup2(target, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


@contextlib.contextmanager
def terminal_interrupt_ignored() -> Iterator[None]:
    """Processes started here ignore SIGINT (an ignored signal stays ignored across exec, and Python then installs
    no KeyboardInterrupt for it). A terminal's Ctrl-C goes to its whole foreground process group: submitit's local
    controller would kill the node tasks a second later and training would end mid-step without a checkpoint.
    hpc-ft, which alone still gets it, stops the job at a checkpoint instead (``interrupt_stops_job``). Outside
    the main thread (where Python allows no handler) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


class LocalExecutor(Executor):
    """Emulated nodes on this machine: real torchrun per node, rendezvous on 127.0.0.1."""

    name = "local"
    liveness = PROCESS  # a detached job holds its run dir while it runs (hpc_ft.rundir.lock)
    first_host_hint = "127.0.0.1"
    nodes_share_host = True  # every emulated node is a process tree on this machine
    interrupt_stops_job = True  # Ctrl-C stops the job at a checkpoint (terminal_interrupt_ignored shields it)

    def problems(self, conf: JobConf, gpu_count: Callable[[], int]) -> list[Problem]:
        return this_machine_gpu_problems(self.name, conf, gpu_count)

    def make_executor(self, spec: JobSpec) -> Any:
        from hpc_ft.node.submitit_job import node_job_python

        # The node task's job process starts without submitit's numpy import (hpc_ft.node.submitit_job).
        return _submitit_local(spec, submitit_folder(spec), python=node_job_python())

    def array_executor(self, spec: JobSpec, folder: Path, parallelism: int) -> Any:
        # The payload is a Hydra app's task function, not a node task: submitit's own job entry runs it.
        return _submitit_local(spec, Path(folder).expanduser().absolute(), python=None)

    def submitting(self, spec: JobSpec):
        stack = contextlib.ExitStack()
        stack.enter_context(local_controller_output(controller_log(submitit_folder(spec))))
        stack.enter_context(terminal_interrupt_ignored())
        return stack

    def stop_and_wait(self, job_ids: Sequence[str]) -> list[str]:
        return stop_local_jobs([int(j) for j in job_ids])

    def stop_job(self, job_id: str, spec: JobSpec) -> bool:
        """Send the preemption signal to the job's torchrun agents (children of its controller, pid ``job_id``):
        as Slurm's signal reaches them through the node task, they forward it to the workers."""
        from hpc_ft.node.preempt import preempt_signum

        sent = False
        if not is_local_controller(int(job_id)):
            return False  # ended, and its pid maybe another process's by now
        for pid in torchrun_pids(int(job_id)):
            try:
                os.kill(pid, preempt_signum(spec))
                sent = True
            except ProcessLookupError:
                continue
        return sent

    def submit_sweep(self, entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path, *, wait: bool,
                     poll_s: float, record_state: RecordState, record_ids: RecordIds) -> bool:
        if wait:
            self.run_local(entries, parallelism, poll_s, on_submit=lambda e: record_state("running"))
            gather_entries(entries, poll_s)
            return True
        driver = self.submit_detached(entries, parallelism, sweep_dir, record_ids)
        log.info(f"local sweep driver {driver.job_id} runs {len(entries)} job(s), {parallelism} at once")
        return False

    def run_local(self, entries: Sequence[SweepEntry], parallelism: int, poll_s: float,
                  on_submit: Callable[[SweepEntry], None] | None = None) -> None:
        """Run local jobs in plan order, at most ``parallelism`` at once; returns when all are done."""

        def start(e: SweepEntry) -> Any:
            # Each job holds its own run dir, as a wait=false submission's does: `hpc-ft status` of the job or the
            # sweep tells it runs from the owner record (its controller's pid), not only from its node reports.
            e.job = self.submit_held(e.spec)
            if on_submit is not None:
                on_submit(e)
            return e.job

        try:
            run_bounded(entries, parallelism, start, poll_s)
        except KeyboardInterrupt:  # Ctrl-C (the jobs ignore it: terminal_interrupt_ignored): stop them at a checkpoint
            running = [e for e in entries if e.job is not None and not e.job.done()]
            log.warning("Ctrl-C: stopping %d running job(s) at a checkpoint; %d not started (Ctrl-C again: stop "
                        "waiting)", len(running), sum(e.job is None for e in entries))
            for line in self.stop_and_wait([str(e.job.job_id) for e in running]):
                log.warning("%s", line)
            raise

    def run_batch(self, ex: Any, calls: Sequence[Callable[[], Any]], parallelism: int, poll_s: float) -> list[Any]:
        """A Hydra app's sweep (hydra_plugins.hpc_ft_launcher.app): submitit's local batch would start every
        job at once, so the jobs go through the queue hpc_ft's own local sweeps use, ``parallelism`` wide.
        Returns once every job has ended (their results are ready)."""
        return run_bounded(calls, parallelism, ex.submit, poll_s)

    def submit_detached(self, entries: Sequence[SweepEntry], parallelism: int, sweep_dir: Path,
                        record_ids: RecordIds) -> Any:
        """Start a LocalSweepDriver as a submitit local job; returns its job."""
        import submitit

        folder = SweepDir(sweep_dir).driver_submitit
        ex = submitit.LocalExecutor(folder=folder)
        total_min = sum(e.spec.conf.resources.timeout_min for e in entries) + 5  # worst case: one after another
        ex.update_parameters(timeout_min=total_min)
        poll_s = min(e.spec.conf.executor.poll_interval_s for e in entries)
        with local_controller_output(controller_log(folder)):
            return ex.submit(LocalSweepDriver(self, [str(spec_path(e.spec)) for e in entries],
                                              [e.num for e in entries], parallelism, record_ids, poll_s))


def run_bounded(items: Sequence[Any], parallelism: int, start: Callable[[Any], Any], poll_s: float) -> list[Any]:
    """``start(item)`` for each item in order, each returning a local submitit job, with at most
    ``parallelism`` jobs running at once; returns every job, in order, once all have ended. ``poll_s``: seconds
    between checks of the running jobs."""
    pending, running, jobs = list(items), [], []
    while pending or running:
        while pending and len(running) < max(1, parallelism):
            job = start(pending.pop(0))
            jobs.append(job)
            running.append(job)
        _wait_any(running, poll_s)
        running = [j for j in running if not j.done()]
    return jobs


def torchrun_pids(controller_pid: int) -> list[int]:
    """The torchrun agents below a local job's controller process (one per emulated node)."""
    from hpc_ft.node.task import process_tree

    out = []
    for pid in process_tree(controller_pid)[1:]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"torch.distributed.run" in argv:
            out.append(pid)
    return out


STOP_GRACE_S = 60.0  # how long a stopped local job's workers get to checkpoint before what is left is killed


def stop_local_jobs(controller_pids: Sequence[int], grace_s: float = STOP_GRACE_S,
                    checkpoints: bool = True) -> list[str]:
    """Stop local jobs at a checkpoint, as a preemption would, and wait for them; returns one line per job.
    ``checkpoints=False``: the lines promise no checkpoint (a user's script checkpoints only if it keeps
    hpc_ft.script_api's contract).

    SIGTERM goes to each node's torchrun process group (the node task starts torchrun in a new session): the
    workers finish their step, checkpoint and exit. A job without a torchrun yet gets it at its submitit controller
    (``controller_pids``), which forwards it to the node tasks. Every job is signalled before any is waited for;
    whatever is still alive ``grace_s`` seconds later is killed (the job resumes from its newest checkpoint).
    """
    from hpc_ft.node.task import process_tree

    # A job that has ended is not signalled: its controller's pid may be another process's by now (pids wrap at
    # pid_max; the submitting process reaps its controllers as it polls them).
    ended = {pid for pid in controller_pids if not is_local_controller(pid)}
    for pid in controller_pids:
        if pid in ended:
            continue
        torchruns = torchrun_pids(pid)
        for p in torchruns or [pid]:
            try:
                (os.killpg if torchruns else os.kill)(p, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    while any(is_local_controller(pid) for pid in controller_pids) and time.monotonic() < deadline:
        time.sleep(0.2)  # a controller ends once every node task has reported
    out = []
    for pid in controller_pids:
        if pid in ended:
            out.append(f"local job {pid} had already ended")
            continue
        if not is_local_controller(pid):
            out.append(f"stopped local job {pid} (SIGTERM: "
                       + ("checkpoint at the current step)" if checkpoints else "sent to the script's workers)"))
            continue
        for p in process_tree(pid):
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        out.append(f"killed local job {pid}: it did not stop within {grace_s:g} s"
                   + (" (resumes from the newest checkpoint)" if checkpoints else ""))
    return out


def is_local_controller(pid: int) -> bool:
    """``pid`` is a running submitit local controller (``python -m submitit.local._local FOLDER``, maybe behind the
    shell that runs ``executor.setup``): what a local job id names while the job runs, and nothing else."""
    deadline = time.monotonic() + 1.0
    while True:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        # Empty for an instant while a process execs (its parent, submitit, resumes before the kernel has set
        # the new arguments), and for good once it is a zombie.
        if cmdline or not _alive(pid) or time.monotonic() > deadline:
            return b"submitit.local._local" in cmdline and _alive(pid)
        time.sleep(0.01)


def _alive(pid: int) -> bool:
    """``pid`` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


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


@dataclass
class LocalSweepDriver:
    """Runs a local sweep detached from hpc-ft (wait=false): the same schedule, then gathers every job.

    Picklable: submitit ships it to its own local process. Arguments are run dirs' job.yaml paths in plan order;
    ``record_ids`` writes each job's id, then the state "finished", into the sweep's manifest.
    """

    executor: LocalExecutor
    spec_paths: list[str]
    nums: list[int]
    parallelism: int
    record_ids: RecordIds
    poll_s: float = 1.0

    def __call__(self) -> dict[int, bool]:
        entries = [SweepEntry(num, JobSpec.load(p), i) for i, (num, p) in enumerate(zip(self.nums, self.spec_paths))]

        def record(e: SweepEntry) -> None:
            self.record_ids({e.num: str(e.job.job_id)})

        self.executor.run_local(entries, self.parallelism, self.poll_s, on_submit=record)
        gather_entries(entries, self.poll_s)
        self.record_ids({}, state="finished")
        return {e.num: e.ok for e in entries}
