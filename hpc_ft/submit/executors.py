"""JobSpec -> a configured submitit executor. The only place that builds executors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpc_ft.job import JobSpec


def submitit_folder(spec: JobSpec) -> Path:
    return spec.run_dir / "submitit"


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
