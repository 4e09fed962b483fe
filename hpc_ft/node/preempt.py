"""The one preemption and requeue routine on the node: forward the signal, wait for the checkpoint, requeue.

Every way a node task runs under a scheduler takes these steps through ``NodePreemption``: the submitit hook
``NodeTask.checkpoint`` (local and Slurm executors), the Slurm node task's handler on every node
(``SlurmNodeTask``) and the plain sbatch script's entry (``hpc_ft.node.entry``).

1. **Forward.** The preemption signal (``executor.preempt_signal``) reaches the node task; it passes it on to its
   torchrun once (``forward``), which passes it on to the workers (``--signals-to-handle``). The workers agree
   through an all-reduce, stop at the end of a step, write the checkpoint and exit.
2. **Wait for the checkpoint.** The node waits, bounded by W below, until torchrun has exited
   (``stop_torchrun``, in the signal handler: it interrupts the main thread's own wait for torchrun).
3. **Decide.** The job is requeued when training stopped for preemption and fewer than
   ``executor.max_requeues`` requeues were used (``may_requeue``); otherwise the checkpoint stays for a resume.
4. **Requeue.** Node 0 asks the scheduler (submitit's ``scontrol requeue``, or the entry's own). Requeueing stops
   the job's steps with SIGTERM, and the call to ``scontrol`` runs inside the step: killed before it has its
   answer, it fails and submitit records the attempt as an error. So the node first blocks SIGTERM
   (``hold_for_requeue``); the block is inherited by ``scontrol`` (signal masks survive fork and exec), and
   Slurm's SIGKILL after its ``KillWait`` ends the attempt.

Timing rule, for a scheduler warning delay of D seconds (``executor.preempt_signal_delay_s``: Slurm's
``--signal=SIG@D`` comes D seconds before the time limit, when the job is killed)::

    t = 0      the signal; the node forwards it to torchrun at once
    t <= G     torchrun's worker grace, G = max(30, D - 15) (TORCH_ELASTIC_SHUTDOWN_TIMEOUT): the workers
               checkpoint and exit; torchrun SIGKILLs those still running at G (30 s is its own default)
    t <= W     the node's wait for torchrun, W = G + 5 (torchrun's own teardown after its workers)
    D - W      the margin left to requeue (the node report, submitit's pickle, scontrol): 10 s when D >= 45

With D < 45 s the floor of 30 s on G wins and the kill at D may come before the requeue: give D >= 45.
A ``scancel --signal`` has no deadline; the same waits apply.

The submitter's side of a requeue (hpc_ft.submit.gather.wait): the nodes that are not node 0 return from the
preempted attempt and leave its result files; they stay until the requeued run's tasks end, so waiting ends when
Slurm has ended the job, not when every task has a result file.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
from dataclasses import dataclass
from typing import Any, Callable

from hpc_ft.job import JobSpec
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.records import NodeReport

log = logging.getLogger(__name__)

TORCHRUN_MIN_GRACE_S = 30  # torchrun's own default shutdown timeout; the grace never goes below it
WORKER_GRACE_LEAD_S = 15  # G = D - 15: the wait (G + 5) and the requeue margin (10) come after it
TORCHRUN_TEARDOWN_S = 5  # after its workers are gone, torchrun closes its rendezvous and exits
REQUEUE_KILL_WAIT_S = 120  # the entry's node 0 after `scontrol requeue`: Slurm stops the step within KillWait


@dataclass(frozen=True)
class PreemptTiming:
    """The timing rule (module docstring) for one warning delay; every duration in seconds from the signal."""

    delay_s: int  # D: the scheduler's warning before it kills the job

    @property
    def worker_grace_s(self) -> int:
        """G: how long torchrun lets its workers checkpoint and exit before it SIGKILLs them."""
        return max(TORCHRUN_MIN_GRACE_S, self.delay_s - WORKER_GRACE_LEAD_S)

    @property
    def exit_wait_s(self) -> int:
        """W: how long the node waits for torchrun to exit after forwarding the signal."""
        return self.worker_grace_s + TORCHRUN_TEARDOWN_S

    @property
    def requeue_margin_s(self) -> int:
        """D - W: what is left before the kill to requeue (negative: the kill may come first)."""
        return self.delay_s - self.exit_wait_s

    @classmethod
    def of(cls, spec: JobSpec) -> "PreemptTiming":
        return cls(int(spec.conf.executor.preempt_signal_delay_s))


def signal_name(name: str) -> str:
    """Normalise 'usr2' / 'SIGUSR2' to 'SIGUSR2'."""
    n = name.upper()
    return n if n.startswith("SIG") else "SIG" + n


def preempt_signum(spec: JobSpec) -> int:
    """The job's preemption signal as a number (``executor.preempt_signal``)."""
    return int(getattr(signal, signal_name(spec.conf.executor.preempt_signal)))


def wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait until process ``pid`` has exited (reaped or not); True if it did within ``timeout_s`` seconds.

    Uses a pidfd rather than Popen.wait: this runs inside a signal handler that may interrupt the
    main thread's own Popen.wait, which holds the Popen's wait lock for as long as it blocks.
    """
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True  # already reaped
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return bool(ready)
    finally:
        os.close(fd)


def chain_handler(signum: int, first: Callable[[int, Any], None]) -> None:
    """Install ``first`` for ``signum``, then call whatever handler was there before (submitit's)."""
    prev = signal.getsignal(signum)

    def handler(sig: int, frame: Any) -> None:
        first(sig, frame)
        if callable(prev):
            prev(sig, frame)

    signal.signal(signum, handler)


class PreemptForwarder:
    """Signal handler: remember the preemption signal and pass it on to the node's torchrun, once.

    ``task`` is anything with a ``_proc`` attribute (the running torchrun's Popen, or None before it starts).
    """

    def __init__(self, task: Any, signum: int) -> None:
        self.task, self.signum = task, signum
        self.received = False
        self._sent_to: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = True
        self.forward()

    def sent_to(self, pid: int) -> bool:
        """The signal was forwarded to the process ``pid`` (this node's torchrun)."""
        return self._sent_to == pid

    def forward(self) -> None:
        proc = getattr(self.task, "_proc", None)
        if proc is None or self._sent_to == proc.pid:
            return  # torchrun not started yet (it will find the checkpoint-free state), or already told
        try:
            os.kill(proc.pid, self.signum)
            self._sent_to = proc.pid
        except ProcessLookupError:
            pass


class NodePreemption:
    """The routine (module docstring) for one node task: ``task._proc`` is its torchrun, ``task.requeues`` how
    many times the job was requeued so far."""

    def __init__(self, spec: JobSpec, task: Any) -> None:
        self.task = task
        self.stop_request = RunDir.of(spec).stop_request
        self.timing = PreemptTiming.of(spec)
        self.max_requeues = int(spec.conf.executor.max_requeues)
        self.forwarder = PreemptForwarder(task, preempt_signum(spec))

    @property
    def received(self) -> bool:
        """The preemption signal reached this node's handler (``install``)."""
        return self.forwarder.received

    def install(self) -> None:
        """On this node, whenever the signal comes: steps 1 and 2 (``stop_torchrun``), then any handler already
        installed (submitit's, whose hook on node 0 finds torchrun gone and goes on to decide and requeue)."""
        chain_handler(self.forwarder.signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.forwarder.received = True
        self.stop_torchrun()

    def stop_torchrun(self) -> bool:
        """Step 1 and 2: forward the signal (once) and wait up to W for torchrun to exit; True if it did."""
        self.forwarder.forward()
        proc = getattr(self.task, "_proc", None)
        if proc is None:
            return True
        # Not proc.wait(): this runs in a signal handler that may have interrupted the main thread's own
        # proc.wait(), which holds the Popen's wait lock while it blocks.
        if wait_exit(proc.pid, self.timing.exit_wait_s):
            return True
        log.warning("torchrun did not exit within %d s of the preemption signal", self.timing.exit_wait_s)
        return False

    def may_requeue(self) -> bool:
        """Step 3: requeues are left (``executor.max_requeues``) and no search stopped this run early (its
        ``RunDir.stop_request``); logs why not otherwise."""
        if self.stop_request.exists():
            log.warning("stopped early by a search (%s): checkpointed, not requeueing", self.stop_request)
            return False
        if self.task.requeues >= self.max_requeues:
            log.warning("preempted, but not requeueing: executor.max_requeues=%d reached", self.max_requeues)
            return False
        return True

    @staticmethod
    def hold_for_requeue() -> None:
        """Step 4, before the requeue call: block SIGTERM in this thread and in the processes it starts.

        The requeue's own SIGTERM must not cut ``scontrol requeue`` short (module docstring); the attempt ends
        with the scheduler's SIGKILL (or, for the entry, ``await_requeue_kill``).
        """
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])

    @staticmethod
    def await_requeue_kill(timeout_s: float = REQUEUE_KILL_WAIT_S) -> None:
        """Block (bounded) until the requeue's SIGTERM arrives, so this attempt cannot complete first."""
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
        signal.sigtimedwait([signal.SIGTERM], timeout_s)


def should_requeue(report: NodeReport, signalled: bool) -> bool:
    """Step 3 for a node that ran to its end: training stopped at a preemption checkpoint (torchrun itself exits
    non-zero after forwarding a signal). submitit's hook needs no such test: it runs only on the signal."""
    return report.preempted or (signalled and not report.ok)


def scontrol_requeue(job_id: str) -> bool:
    """``scontrol requeue JOB`` (with SIGTERM held: ``hold_for_requeue``); True when Slurm accepted it."""
    NodePreemption.hold_for_requeue()
    proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        log.error("scontrol requeue %s failed: %s", job_id, proc.stderr.strip())
    return proc.returncode == 0
