"""Executors as a registry: ``executor.name`` -> the one object that knows everything that differs for it.

Each executor is one module of this package (``local``, ``debug``, ``slurm``) implementing
``hpc_ft.submit.executors.base.Executor``, and one ``conf/executor/<name>.yaml`` that selects it. Everything
else asks the registry (``executor_named``) instead of comparing names; ``validate`` and ``resolve`` here are
the config checks and the job resolution with the registered executors' rules (``hpc_ft.config`` sits below
this package, so it is handed them). See docs/architecture.md, "Adding an executor".
"""

from __future__ import annotations

from typing import Any, Callable

from hpc_ft.config.schema import JobConf
from hpc_ft.config.validate import host_cpu_count, local_gpu_count, threads_per_worker
from hpc_ft.config.validate import validate as _validate
from hpc_ft.errors import ConfigError, Problem
from hpc_ft.job import JobSpec
from hpc_ft.job import resolve as _resolve
from hpc_ft.submit.executors.base import Executor, SweepEntry, save_spec, submitit_folder
from hpc_ft.submit.executors.debug import DebugExecutor
from hpc_ft.submit.executors.local import LocalExecutor, local_controller_output, local_parameters
from hpc_ft.submit.executors.slurm import SlurmExecutor

# Registration order is the order error messages list the names in.
REGISTRY: dict[str, Executor] = {}


def register(executor: Executor) -> Executor:
    """Add ``executor`` under its ``name`` (a later registration of the same name replaces it); returns it."""
    REGISTRY[executor.name] = executor
    return executor


def unregister(name: str) -> None:
    """Remove the executor registered as ``name`` (tests that add their own)."""
    REGISTRY.pop(name, None)


def names() -> list[str]:
    """The registered executor names, in registration order."""
    return list(REGISTRY)


for _executor in (LocalExecutor(), DebugExecutor(), SlurmExecutor()):
    register(_executor)


def executor_named(name: str) -> Executor:
    """The executor registered as ``name``; ConfigError (exit 2) listing the registered names otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        first, rest = names()[0], names()[1:]
        raise ConfigError([Problem("executor", name, f"must be one of {', '.join(names())}",
                                   f"pass executor={first}" + (f" (or {', '.join(rest)})" if rest else ""))])


def executor_of(spec_or_conf: JobSpec | JobConf) -> Executor:
    """The executor a spec or conf names (``executor.name``)."""
    conf = spec_or_conf.conf if isinstance(spec_or_conf, JobSpec) else spec_or_conf
    return executor_named(conf.executor.name)


def validate(conf: JobConf, gpu_count: Callable[[], int] = local_gpu_count) -> list[str]:
    """``hpc_ft.config.validate.validate`` with the registered executors: raise ConfigError listing every
    problem in ``conf`` (an unknown executor name among them); return warnings that do not block the job."""
    return _validate(conf, gpu_count, executors=REGISTRY)


def resolve(conf: JobConf, overrides: list[str] | None = None) -> JobSpec:
    """``hpc_ft.job.resolve`` after the job's executor pinned its workers per node (the debug executor: 1) and,
    where its nodes share one host (``nodes_share_host``: the local executor), the threads per worker, unless
    ``train.num_threads`` is set: this host's CPUs split among the workers of every node (``threads_per_worker``).

    Call it on a validated conf (an unknown executor name raises ConfigError).
    """
    executor = executor_of(conf)
    conf.resources.workers_per_node = executor.workers_per_node(conf)
    if executor.nodes_share_host and not conf.train.num_threads:
        conf.train.num_threads = threads_per_worker(conf, host_cpus=host_cpu_count())
    return _resolve(conf, overrides)


def make_executor(spec: JobSpec) -> Any:
    """The configured submitit executor for ``spec``, built by the executor it names."""
    return executor_of(spec).make_executor(spec)


__all__ = ["REGISTRY", "DebugExecutor", "Executor", "LocalExecutor", "SlurmExecutor", "SweepEntry", "executor_named",
           "executor_of", "local_controller_output", "local_parameters", "make_executor", "names", "register",
           "resolve", "save_spec", "submitit_folder", "unregister", "validate"]
