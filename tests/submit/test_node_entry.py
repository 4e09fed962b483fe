"""The Slurm node side without a cluster: requeue decisions, signal forwarding, waiting on a process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from hpc_ft.node.entry import restart_count
from hpc_ft.node.preempt import PreemptForwarder, chain_handler, should_requeue, wait_exit
from hpc_ft.rundir.records import NodeReport


def report(code: int, preempted: bool = False) -> NodeReport:
    return NodeReport(host="n", node_rank=0, job_id="1", exit_code=code, wall_s=1.0, preempted=preempted)


def test_restart_count_from_slurm():
    assert restart_count({}) == 0
    assert restart_count({"SLURM_RESTART_COUNT": "2"}) == 2
    assert restart_count({"SLURM_RESTART_COUNT": ""}) == 0


def test_requeue_only_after_a_preemption_stop():
    assert should_requeue(report(1, preempted=True), signalled=False)  # training said it stopped for preemption
    assert should_requeue(report(1), signalled=True)  # torchrun exits 1 after forwarding the signal
    assert not should_requeue(report(0), signalled=True)  # finished before the signal mattered
    assert not should_requeue(report(1), signalled=False)  # a crash is not a preemption


def _child(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def test_wait_exit_sees_an_unreaped_exit_and_times_out_on_a_live_one():
    live = _child("import time; time.sleep(60)")
    try:
        assert wait_exit(live.pid, 0.2) is False
    finally:
        live.kill()
    assert wait_exit(live.pid, 10) is True  # exited, not yet reaped: the pidfd is readable
    live.wait()
    assert wait_exit(live.pid, 10) is True  # reaped: nothing left to wait for


class _Task:
    _proc = None


def test_forwarder_passes_the_signal_on_once():
    task = _Task()
    fwd = PreemptForwarder(task, signal.SIGUSR2)
    fwd(signal.SIGUSR2, None)  # before torchrun started: remembered, nothing to send
    assert fwd.received
    task._proc = _child("import signal, sys\n"
                        "signal.signal(signal.SIGUSR2, lambda *a: (print('got', flush=True), sys.exit(75)))\n"
                        "print('ready', flush=True)\nsignal.pause()\n")
    assert task._proc.stdout.readline() == "ready\n"
    fwd.forward()
    fwd.forward()  # idempotent: the handler in the child would print twice
    assert task._proc.wait(timeout=30) == 75
    assert task._proc.stdout.read() == "got\n"


def test_chained_handler_runs_ours_then_the_previous_one():
    seen = []
    old = signal.signal(signal.SIGUSR2, lambda s, f: seen.append("previous"))
    try:
        chain_handler(signal.SIGUSR2, lambda s, f: seen.append("ours"))
        os.kill(os.getpid(), signal.SIGUSR2)
        assert seen == ["ours", "previous"]
    finally:
        signal.signal(signal.SIGUSR2, old)
