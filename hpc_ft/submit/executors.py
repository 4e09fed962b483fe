"""JobSpec -> a configured submitit executor. The only place that builds executors."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from hpc_ft.job import JobSpec
from hpc_ft.rundir.layout import RunDir


def submitit_folder(spec: JobSpec) -> Path:
    return RunDir.of(spec).submitit


def local_parameters(spec: JobSpec) -> dict[str, Any]:
    """submitit LocalExecutor parameters: one task per emulated node on this machine."""
    r = spec.conf.resources
    return {"timeout_min": r.timeout_min, "tasks_per_node": r.nodes, "gpus_per_node": r.gpus_per_node,
            "signal_delay_s": spec.conf.executor.preempt_signal_delay_s}


def make_executor(spec: JobSpec):
    """Build the submitit executor named by executor.name, parameters set from the spec."""
    import submitit

    name = spec.conf.executor.name
    folder = submitit_folder(spec)
    if name == "debug":
        return submitit.DebugExecutor(folder=folder)
    if name == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(**local_parameters(spec))
        return ex
    if name == "slurm":
        from hpc_ft.submit.slurm import make_slurm_executor

        return make_slurm_executor(spec)
    raise ValueError(f"unknown executor {name!r}")  # validate() rejects this before we get here


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
