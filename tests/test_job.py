"""JobSpec: resolved, serializable, round-trips through job.yaml unchanged."""

from hpc_ft.config.compose import compose_conf
from hpc_ft.job import JobSpec
from hpc_ft.submit.executors import resolve  # hpc_ft.job.resolve after the executor's own rules


def test_round_trip(tmp_path):
    conf = compose_conf(["model=mlp", "data=synthetic", "resources.nodes=2", "precision=fp32",
                         "+executor.env.FOO=bar baz"], run_dir=tmp_path / "run")
    spec = resolve(conf, ["resources.nodes=2"])
    path = spec.save()
    back = JobSpec.load(path)
    assert back == spec
    assert back.run_dir == (tmp_path / "run").resolve()
    assert back.world_size == 4 and back.conf.resources.workers_per_node == 2
    assert back.conf.model["_target_"].endswith("MLPClassifier")
    assert back.conf.executor.env == {"FOO": "bar baz"}
    assert back.overrides == ["resources.nodes=2"]


def test_debug_executor_runs_one_worker(tmp_path):
    spec = resolve(compose_conf(["executor=debug", "model=mlp", "data=synthetic"], run_dir=tmp_path))
    assert spec.workers_per_node == 1 and spec.world_size == 1
