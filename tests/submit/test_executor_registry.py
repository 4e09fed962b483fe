"""Executors are a registry: a new executor is one class registered under its name, and validation, the CLI's
dry run and dispatch reach it through the registry without any other module knowing its name."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from hpc_ft.config.compose import compose_conf
from hpc_ft.config.schema import JobConf
from hpc_ft.errors import ConfigError, Problem
from hpc_ft.submit.executors import (LocalExecutor, executor_named, names, register, resolve, unregister,
                                     validate)
from hpc_ft.submit.executors.debug import InProcessNodeTask

from tests.conftest import SYNTH


class InProcessLocal(LocalExecutor):
    """The test's own executor: submitit's local executor (a process of its own), training in that process
    without torchrun, so one node and one worker."""

    name = "inproc_local"
    node_task_class = InProcessNodeTask
    first_host_hint = "<the inproc_local host>"

    def workers_per_node(self, conf: JobConf) -> int:
        return 1

    def problems(self, conf, gpu_count) -> list[Problem]:
        p = super().problems(conf, gpu_count)
        if conf.resources.nodes > 1:
            p.append(Problem("resources.nodes", conf.resources.nodes, "the inproc_local executor runs one node",
                             "pass resources.nodes=1"))
        return p


@pytest.fixture
def inproc_local():
    executor = register(InProcessLocal())
    yield executor
    unregister(executor.name)


def _conf(tmp_path, *overrides):
    return compose_conf([*SYNTH, "executor.name=inproc_local", *overrides], run_dir=tmp_path / "run")


def test_builtin_executors_are_registered_in_the_order_messages_list_them():
    assert names()[:3] == ["local", "debug", "slurm"]
    with pytest.raises(ConfigError) as err:
        executor_named("nope")
    (p,) = err.value.problems
    assert p.key == "executor" and "must be one of local, debug, slurm" in p.rule and "executor=local" in p.fix


def test_an_unregistered_executor_is_refused_with_the_registered_names(tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(_conf(tmp_path), gpu_count=lambda: 0)
    assert [p.key for p in err.value.problems] == ["executor"]
    assert "inproc_local" not in err.value.problems[0].rule


def test_a_registered_executor_brings_its_own_config_rules(tmp_path, inproc_local):
    assert validate(_conf(tmp_path, "resources.workers_per_node=2", "train.global_batch_size=3"),
                    gpu_count=lambda: 0) == []  # its one worker makes any batch size fit
    with pytest.raises(ConfigError) as err:
        validate(_conf(tmp_path, "resources.nodes=2", "resources.gpus_per_node=1"), gpu_count=lambda: 0)
    problems = {p.key: p for p in err.value.problems}
    assert "inproc_local executor runs one node" in problems["resources.nodes"].rule
    # The rule it inherits from the local executor, under its own name.
    assert "the inproc_local executor runs on this machine" in problems["resources.gpus_per_node"].rule
    assert resolve(_conf(tmp_path)).workers_per_node == 1
    with pytest.raises(ConfigError) as err:
        executor_named("nope")
    assert "local, debug, slurm, inproc_local" in err.value.problems[0].rule


def test_the_cli_dry_run_goes_through_the_registry(tmp_path, monkeypatch, inproc_local):
    """`hpc-ft submit` in this process: validation, resolution and the dry run's text come from the executor."""
    from hpc_ft.cli import main

    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["submit", "dry_run=true", *SYNTH, "executor.name=inproc_local", "resources.workers_per_node=2"])
    assert code == 0, err.getvalue()
    job = json.loads(out.getvalue()[out.getvalue().index("{"):])
    assert job["executor"] == "inproc_local" and job["resources"]["workers_per_node"] == 1
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err := io.StringIO()):
        code = main(["submit", "dry_run=true", *SYNTH, "executor.name=inproc_local", "resources.nodes=2"])
    assert code == 2 and "inproc_local executor runs one node" in err.getvalue()


@pytest.mark.slow
def test_dispatch_submits_the_registered_executors_node_task(tmp_path, inproc_local):
    """A real submitit local job running the executor's own node task: it trains in the job's process (no
    torchrun), and the report comes back like any other."""
    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather, wait

    spec = resolve(_conf(tmp_path, "train.max_steps=4"))
    job = submit(spec)
    wait(job, poll_s=0.2, timeout_s=300)
    (report,) = gather(job, spec)
    assert type(job).__name__ == "LocalJob"  # built by the inherited LocalExecutor.make_executor
    assert report.ok and report.train.world_size == 1 and report.train.steps == 4
    assert not (spec.run_dir / "nodes" / "node0" / "torchrun.log").exists()  # its in-process task, not torchrun
    assert (spec.run_dir / "submitit" / "controller.log").exists()  # the inherited local `submitting` wrapper


@pytest.mark.parametrize("nodes, workers, cpus, num_threads, host_cpus, threads", [
    (2, 1, 2, None, None, 2),  # a cluster's nodes: each node's CPUs split among its own workers
    (2, 1, 2, None, 2, 1),  # two emulated nodes on 2 CPUs: 1 thread each, not 2 (4 threads on 2 CPUs)
    (2, 2, 2, None, 2, 1),  # 4 workers on 2 CPUs: never below 1
    (2, 1, 2, None, 16, 2),  # a big host: still the node's own cpus_per_task
    (1, 2, 8, None, 2, 1),  # one node asking for more CPUs than the host has
    (2, 1, 2, 3, 2, 3),  # an explicit train.num_threads wins
])
def test_threads_per_worker_split_the_hosts_cpus_among_every_worker_on_it(nodes, workers, cpus, num_threads,
                                                                           host_cpus, threads):
    from hpc_ft.config.validate import threads_per_worker

    conf = JobConf()
    conf.resources.nodes, conf.resources.workers_per_node, conf.resources.cpus_per_task = nodes, workers, cpus
    conf.train.num_threads = num_threads
    assert threads_per_worker(conf, host_cpus=host_cpus) == threads


def test_resolve_pins_the_threads_where_nodes_share_one_host(tmp_path, monkeypatch):
    """The local executor's emulated nodes share this host's CPUs; Slurm's nodes are hosts of their own."""
    import hpc_ft.submit.executors as executors

    monkeypatch.setattr(executors, "host_cpu_count", lambda: 2)
    two_nodes = [*SYNTH, "resources.nodes=2", "resources.workers_per_node=1"]

    def threads(*overrides: str) -> int | None:
        return resolve(compose_conf([*two_nodes, *overrides], run_dir=tmp_path / "run")).conf.train.num_threads

    assert executor_named("local").nodes_share_host and not executor_named("slurm").nodes_share_host
    assert threads() == 1
    assert threads("train.num_threads=2") == 2
    assert threads("executor=slurm") is None  # each node: cpus_per_task // workers_per_node, on its own host
