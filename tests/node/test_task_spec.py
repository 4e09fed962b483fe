"""The node task carries the spec it was submitted with: the node starts torchrun without reading job.yaml through
OmegaConf. A task pickled under another shape of the schema, or one submitted without a spec, reads job.yaml."""

from __future__ import annotations

import pickle
import subprocess
import sys

import cloudpickle

from hpc_ft.config.compose import compose_conf
from hpc_ft.config.schema import schema_shape
from hpc_ft.job import JobSpec
from hpc_ft.node.task import NodeTask
from hpc_ft.rundir.spec import save_spec, spec_path
from hpc_ft.submit.executors import executor_of, resolve


def _spec(tmp_path, *overrides):
    spec = resolve(compose_conf(["model=mlp", "data=synthetic", "precision=fp32", *overrides],
                                run_dir=tmp_path / "run"), list(overrides))
    save_spec(spec)
    return spec


def test_the_executors_task_carries_a_copy_of_the_saved_spec_through_pickling(tmp_path):
    spec = _spec(tmp_path, "train.max_steps=7")
    task = executor_of(spec).node_task(spec)
    assert task.spec == spec and task.spec is not spec  # a copy: the caller may change its own afterwards
    back = pickle.loads(cloudpickle.dumps(task))  # as submitit ships it
    spec_path(spec).unlink()  # the carried spec is used: job.yaml is not read
    assert back.load_spec() == spec == JobSpec.from_dict(spec.to_dict())


def test_a_task_pickled_under_another_schema_reads_job_yaml(tmp_path):
    spec = _spec(tmp_path, "train.max_steps=7")
    task = NodeTask(str(spec_path(spec)), spec=spec)
    state = task.__getstate__()
    assert state["schema_shape"] == schema_shape()
    stale = pickle.loads(pickle.dumps(task))
    stale.__setstate__({**state, "schema_shape": (("an_older_field", "int", None),)})
    assert stale.spec is None  # not trusted: the next line reads job.yaml
    assert stale.load_spec() == spec and stale.spec == spec  # read once, kept for the rest of the run


def test_a_task_without_a_spec_reads_job_yaml(tmp_path):
    spec = _spec(tmp_path, "train.max_steps=9")
    task = pickle.loads(pickle.dumps(NodeTask(str(spec_path(spec)))))  # a search trial's, or the sbatch entry's
    assert task.spec is None and task.load_spec() == spec


def test_a_node_starting_a_carried_task_does_not_import_omegaconf(tmp_path):
    spec = _spec(tmp_path)
    blob = tmp_path / "task.pkl"
    blob.write_bytes(cloudpickle.dumps(executor_of(spec).node_task(spec)))
    code = ("import pickle, sys\n"
            f"task = pickle.loads(open({str(blob)!r}, 'rb').read())\n"
            "spec = task.load_spec()\n"
            "from hpc_ft.node.launch import torchrun_argv, worker_env\n"
            "from hpc_ft.node.rendezvous import placement_from_env\n"
            "place = placement_from_env({})\n"
            "torchrun_argv(spec, place), worker_env(spec, place)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('omegaconf', 'hydra')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
