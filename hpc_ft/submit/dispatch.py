"""Submit a JobSpec through the executor it names and return the handle; the entry point for one job."""

from __future__ import annotations

from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.submit.executors import executor_of, save_spec

__all__ = ["save_spec", "submit"]


def submit(spec: JobSpec) -> Any:
    """Save the spec and submit one node task per node through ``spec``'s executor; returns the submitit job.

    The executor checks its request first (Slurm: values a batch script can't hold; with ``preflight``, the
    partition's limits), so a refused job leaves nothing behind. An unknown executor name raises ConfigError.
    """
    return executor_of(spec).submit(spec)
