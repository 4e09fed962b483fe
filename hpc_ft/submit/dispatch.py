"""Submit a JobSpec through submitit and return the handle; the only module that dispatches."""

from __future__ import annotations

import contextlib
from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.node.task import NodeTask
from hpc_ft.rundir.layout import controller_log
from hpc_ft.rundir.spec import save_spec, spec_path
from hpc_ft.submit.executors import local_controller_output, make_executor, submitit_folder


def submit(spec: JobSpec) -> Any:
    """Save the spec and submit one NodeTask per node; returns the submitit job.

    Slurm requests are checked first (values a batch script can't hold; with ``preflight``, the
    partition's limits), so a refused job leaves nothing behind.
    """
    task_cls = NodeTask
    if spec.conf.executor.name == "slurm":
        from hpc_ft.node.slurm_task import SlurmNodeTask
        from hpc_ft.submit.slurm import check_sbatch_values

        check_sbatch_values(spec)
        if spec.conf.preflight:
            from hpc_ft.submit.preflight import preflight

            preflight(spec.conf.resources)
        task_cls = SlurmNodeTask
    save_spec(spec)
    executor = make_executor(spec)
    local = spec.conf.executor.name == "local"
    with local_controller_output(controller_log(submitit_folder(spec))) if local else contextlib.nullcontext():
        return executor.submit(task_cls(str(spec_path(spec))))
