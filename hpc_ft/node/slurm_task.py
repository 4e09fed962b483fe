"""The NodeTask under Slurm: the preemption signal reaches torchrun on every node, and the job requeues.

submitit calls ``checkpoint()`` only in global rank 0 (node 0); the other nodes' handlers do nothing.
``SlurmNodeTask`` forwards the signal to its node's torchrun on every node (the workers then agree
through an all-reduce and checkpoint together), and on node 0 waits for torchrun to exit before
submitit requeues the job. ``hpc_ft.node.entry`` uses the same forwarder without submitit.
"""

from __future__ import annotations

import logging
import os
import select
import signal
from typing import Any, Callable

from hpc_ft.job import JobSpec
from hpc_ft.node.launch import signal_name
from hpc_ft.node.task import NodeTask

log = logging.getLogger(__name__)


def preempt_signum(spec: JobSpec) -> int:
    return int(getattr(signal, signal_name(spec.conf.executor.preempt_signal)))


def exit_wait_s(spec: JobSpec) -> float:
    """How long to wait for torchrun after forwarding: most of the warning time, leaving room to requeue."""
    return float(max(30, spec.conf.executor.preempt_signal_delay_s - 5))


def wait_exit(pid: int, timeout_s: float) -> bool:
    """Wait until process ``pid`` has exited (reaped or not); True if it did within ``timeout_s``.

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


class PreemptForwarder:
    """Signal handler: remember the preemption signal and pass it on to the node's torchrun, once."""

    def __init__(self, task: NodeTask, signum: int) -> None:
        self.task, self.signum = task, signum
        self.received = False
        self._sent_to: int | None = None

    def __call__(self, signum: int, frame: Any) -> None:
        self.received = True
        self.forward()

    def forward(self) -> None:
        proc = getattr(self.task, "_proc", None)
        if proc is None or self._sent_to == proc.pid:
            return  # torchrun not started yet (it will find the checkpoint-free state), or already told
        try:
            os.kill(proc.pid, self.signum)
            self._sent_to = proc.pid
        except ProcessLookupError:
            pass


def chain_handler(signum: int, first: Callable[[int, Any], None]) -> None:
    """Install ``first`` for ``signum``, then call whatever handler was there before (submitit's)."""
    prev = signal.getsignal(signum)

    def handler(sig: int, frame: Any) -> None:
        first(sig, frame)
        if callable(prev):
            prev(sig, frame)

    signal.signal(signum, handler)


class SlurmNodeTask(NodeTask):
    """NodeTask for executor=slurm (submitted by hpc_ft.submit.dispatch)."""

    def __call__(self):
        spec = JobSpec.load(self.spec_path)
        self._forwarder = PreemptForwarder(self, preempt_signum(spec))
        chain_handler(self._forwarder.signum, self._forwarder)
        return super().__call__()

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's preemption hook (node 0): torchrun checkpoints and exits, then requeue (bounded)."""
        import submitit

        spec = JobSpec.load(self.spec_path)
        fwd = getattr(self, "_forwarder", None) or PreemptForwarder(self, preempt_signum(spec))
        fwd.forward()
        proc = self._proc
        if proc is not None and not wait_exit(proc.pid, exit_wait_s(spec)):
            log.warning("torchrun did not exit within %.0f s of the preemption signal", exit_wait_s(spec))
        if self.requeues >= spec.conf.executor.max_requeues:
            log.warning("not requeueing: executor.max_requeues=%d reached", spec.conf.executor.max_requeues)
            return None
        return submitit.helpers.DelayedSubmission(type(self)(self.spec_path, self.requeues + 1))
