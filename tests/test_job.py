"""JobSpec: resolved, serializable, round-trips through job.yaml unchanged."""

from hpc_ft.config.compose import compose_conf
from hpc_ft.job import JobSpec
from hpc_ft.rundir.spec import write_spec
from hpc_ft.submit.executors import resolve  # hpc_ft.job.resolve after the executor's own rules


def test_round_trip(tmp_path):
    conf = compose_conf(["model=mlp", "data=synthetic", "resources.nodes=2", "precision=fp32",
                         "+executor.env.FOO=bar baz"], run_dir=tmp_path / "run")
    spec = resolve(conf, ["resources.nodes=2"])
    path = write_spec(spec)
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


def test_job_yaml_of_the_previous_version_loads_under_the_new_names(tmp_path):
    # issue 11.5: train.batch_size -> train.global_batch_size, train.eval_batch_size -> eval_micro_batch_size.
    from hpc_ft.testing.previous import write_previous_job_yaml

    overrides = ["train.global_batch_size=32", "train.eval_micro_batch_size=8"]
    spec = resolve(compose_conf(["model=mlp", "data=synthetic", *overrides], run_dir=tmp_path / "run"), overrides)
    path = write_previous_job_yaml(spec)
    text = path.read_text()
    assert "  batch_size: 32" in text and "eval_batch_size: 8" in text and "train.batch_size=32" in text
    back = JobSpec.load(path)
    assert back == spec
    assert back.conf.train.global_batch_size == 32 and back.conf.train.eval_micro_batch_size == 8
    assert back.overrides == overrides  # an advised next command composes with today's keys


def test_to_dict_is_what_omegaconf_makes_of_the_structured_conf(tmp_path):
    # JobSpec.to_dict uses dataclasses.asdict (it writes every job.yaml, ~12 ms less on each sbatch/submit): the
    # same record OmegaConf makes, nested groups, lists, env and a user script's string arguments included.
    from omegaconf import OmegaConf

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    conf = compose_conf(["model=mlp", "data=synthetic", "+executor.env.FOO=bar baz", f"script.path={script}",
                         "script.args=[--lr,'1e-4',--name,'x y']", "peft=lora"], run_dir=tmp_path / "run")
    spec = resolve(conf, ["peft=lora"])
    assert spec.to_dict() == {"conf": OmegaConf.to_container(OmegaConf.structured(spec.conf)),
                              "overrides": ["peft=lora"]}
    assert JobSpec.load(write_spec(spec)).conf.script.args == ["--lr", "1e-4", "--name", "x y"]


def test_the_schemas_missing_is_omegaconfs():
    # hpc_ft.config.schema spells it out so that the node task need not import OmegaConf
    import omegaconf

    from hpc_ft.config import schema

    assert schema.MISSING == omegaconf.MISSING


def test_resolve_makes_local_paths_absolute_and_keeps_hub_names(tmp_path, monkeypatch):
    # `cd scratch && hpc-ft export ../outputs/rel` failed: job.yaml held model.path=scratch/tiny_llm, relative to
    # the directory the run was submitted from.
    (tmp_path / "scratch" / "tiny_llm").mkdir(parents=True)
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / "3f2a").write_text("{}\n")
    (tmp_path / "scratch" / "sft.jsonl").symlink_to(tmp_path / "blobs" / "3f2a")  # a link into a cache
    (tmp_path / "scratch" / "dev.jsonl").write_text("{}\n")
    (tmp_path / "old_run").mkdir()
    (tmp_path / "mlruns").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = resolve(compose_conf(["model=hf", "model.path=scratch/tiny_llm", "data=files", "data.path=scratch/sft.jsonl",
                                 "data.eval_path=./scratch/../scratch/dev.jsonl", "sched.history=[old_run]",
                                 "tracking.mlflow_uri=mlruns"],
                                run_dir="run"))
    assert spec.conf.model["path"] == str(tmp_path / "scratch" / "tiny_llm")
    # The link is kept, not followed: its name's .jsonl tells data.format=auto the format.
    assert spec.conf.data["path"] == str(tmp_path / "scratch" / "sft.jsonl")
    assert spec.conf.data["eval_path"] == str(tmp_path / "scratch" / "dev.jsonl")
    assert spec.conf.sched.history == [str(tmp_path / "old_run")]
    assert spec.conf.tracking.mlflow_uri == str(tmp_path / "mlruns")  # a local MLflow file store
    # A hub name (read from the local Hugging Face cache) is no local path: kept, in model.path and the tokenizer's
    # data.model_dir alike; so is a path that names nothing (the checks name it), and a URI.
    hub = resolve(compose_conf(["model=hf", "model.path=bert-base-uncased", "data=chatterbot",
                                "tracking.mlflow_uri=http://mlflow:5000"], run_dir="run"))
    assert hub.conf.model["path"] == "bert-base-uncased" and hub.conf.data["model_dir"] == "bert-base-uncased"
    assert hub.conf.tracking.mlflow_uri == "http://mlflow:5000"
    missing = resolve(compose_conf(["model=hf", "model.path=no/such_dir"], run_dir="run"))
    assert missing.conf.model["path"] == "no/such_dir"
    local = resolve(compose_conf(["model=hf", "model.path=scratch/tiny_llm", "data=chatterbot"], run_dir="run"))
    assert local.conf.data["model_dir"] == str(tmp_path / "scratch" / "tiny_llm")  # the tokenizer's dir as well
