"""Stopping local jobs (hpc_ft.submit.executors.local): a job id is a submitit controller's pid, and a pid that no
longer names one (the job ended and the pid wrapped round to another process) is never signalled."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hpc_ft.submit.executors.local import LocalExecutor, is_local_controller, stop_local_jobs

SLEEP = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); time.sleep(120)"


@pytest.fixture
def process():
    """``process(*extra_argv)``: a sleeping Python process (ends on SIGTERM), killed after the test."""
    started = []

    def start(*extra: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", SLEEP, *extra], stdin=subprocess.DEVNULL)
        started.append(p)
        return p

    yield start
    for p in started:
        p.kill()
        p.wait(timeout=30)


def test_a_pid_that_is_not_a_local_controller_is_left_alone(process):
    other = process()  # what an ended job's pid may be by now: someone else's process
    assert not is_local_controller(other.pid)
    assert stop_local_jobs([other.pid], grace_s=1) == [f"local job {other.pid} had already ended"]
    assert LocalExecutor().stop_job(str(other.pid), spec=None) is False
    assert other.poll() is None  # neither SIGTERM nor, after the grace, SIGKILL


def test_a_running_controller_is_stopped(process):
    controller = process("-m", "submitit.local._local", "/tmp/folder")  # its command line, as submitit starts it
    assert is_local_controller(controller.pid)
    (line,) = stop_local_jobs([controller.pid], grace_s=30)
    assert line.startswith(f"stopped local job {controller.pid}")
    assert controller.wait(timeout=30) in (0, -15)  # SIGTERM, before or after its handler is set
