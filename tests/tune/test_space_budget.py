"""Pure parts of a search: the space from Hydra's sweep grammar, the tune.* rules, the budget, evaluation records."""

import json

import pytest

from hpc_ft.config.schema import JobConf
from hpc_ft.errors import ConfigError
from hpc_ft.rundir.evals import EvalReader, append_eval
from hpc_ft.tune.budget import TrialSize, TuneBudget, may_start, parallelism, trials_affordable
from hpc_ft.tune.settings import final_metric, tune_problems
from hpc_ft.tune.space import corner_points, parse_space


def test_hydra_sweep_grammar_becomes_optuna_distributions():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = parse_space(["optim.lr=tag(log,interval(1e-5,1e-3))", "train.warmup_steps=choice(0,20,100)",
                         "train.seed=range(0,6,2)", "precision=fp32,bf16", "model=mlp"])
    p = space.params
    assert p["optim.lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert isinstance(p["train.warmup_steps"], CategoricalDistribution)
    assert p["train.warmup_steps"].choices == (0, 20, 100)
    assert p["train.seed"] == IntDistribution(0, 4, step=2)  # Hydra's range leaves out its stop
    assert p["precision"].choices == ("fp32", "bf16")
    assert space.fixed == ["model=mlp"]
    assert space.grid["train.seed"] == [0, 2, 4] and "optim.lr" not in space.grid
    assert space.overrides({"optim.lr": 1e-4, "train.warmup_steps": 20, "train.seed": 2, "precision": "bf16"}) == \
        ["model=mlp", "optim.lr=0.0001", "train.warmup_steps=20", "train.seed=2", "precision=bf16"]
    low, high = corner_points(space)
    assert (low["optim.lr"], high["optim.lr"], low["train.seed"], high["train.seed"]) == (1e-5, 1e-3, 0, 4)


@pytest.mark.parametrize("override, words", [
    ("optim.lr=tag(log,interval(1e-3,1e-5))", "start < end"),
    ("optim.lr=tag(log,interval(0,1e-3))", "start > 0 on a log scale"),
    ("optim.lr=interval(1e-3", "not an override Hydra can parse"),
])
def test_a_bad_search_range_is_refused_naming_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        parse_space([override])
    assert "optim.lr" in str(e.value) and words in str(e.value) and "Fix:" in str(e.value)


def test_nothing_swept_and_grid_over_an_interval_are_refused():
    with pytest.raises(ConfigError, match="sweep nothing"):
        parse_space(["optim.lr=1e-3"])
    (p,) = parse_space(["optim.lr=interval(1e-5,1e-3)"]).grid_problems()
    assert p.key == "optim.lr" and "tune.sampler=grid" in p.rule


def test_tune_settings_rules_name_key_value_and_fix():
    c = JobConf()
    c.tune.sampler, c.tune.pruner, c.tune.trials = "bayes", "hyperband", 0
    keys = {p.key: p for p in tune_problems(c)}
    assert {"tune.sampler", "tune.pruner", "tune.trials"} <= set(keys)
    assert keys["tune.sampler"].fix == "pass tune.sampler=tpe"
    c = JobConf()
    c.train.eval_every_steps = 0  # no evaluation before the end: nothing to prune on
    assert [p.key for p in tune_problems(c)] == ["train.eval_every_steps"]
    c.tune.pruner = "none"
    assert tune_problems(c) == []


def test_budget_from_gpu_hours_money_and_gpus_at_once():
    c = JobConf()
    c.resources.gpus_per_node, c.resources.timeout_min = 2, 30  # a trial: 2 GPUs x 0.5 h planned
    c.sched.budget_gpu_hours, c.sched.budget_money, c.telemetry.price_per_gpu_hour = 10.0, 8.0, 2.0
    b, size = TuneBudget.of(c), TrialSize.of(c)
    assert (b.unit_hours, b.unit, size.units, size.unit_hours) == (4.0, "GPU", 2, 1.0)  # money: 8 / 2 = 4 GPU-h
    assert trials_affordable(b, size) == 4
    assert may_start(b, size, spent_h=2.0, held_h=1.0) and not may_start(b, size, spent_h=2.0, held_h=1.5)
    c.sched.budget_gpus = 5
    assert parallelism(c, size) == 2  # 5 GPUs hold two 2-GPU trials
    c.tune.parallelism = 4
    assert parallelism(c, size) == 2  # never above what the GPUs at once hold
    c.sched.est_duration_h = 0.25
    assert TrialSize.of(c).unit_hours == 0.5
    cpu = JobConf()
    cpu.sched.budget_gpu_hours = 1.0
    assert TuneBudget.of(cpu).unit == "node" and TuneBudget.of(JobConf()).unit_hours is None


def test_evaluations_are_read_as_they_are_appended(tmp_path):
    path = tmp_path / "metrics.jsonl"
    reader = EvalReader(path)
    assert reader.new_points() == []
    with open(path, "a") as f:
        f.write(json.dumps({"step": 10, "loss": 1.0, "lr": 0.1}) + "\n")  # a logging window: not an evaluation
        append_eval(f, 10, {"eval_loss": 0.5, "eval_accuracy": None})
        f.write('{"step": 20, "eval": {"eval_lo')  # torn: its writer is mid-line
    (p,) = reader.new_points()
    assert (p.step, p.metrics) == (10, {"eval_loss": 0.5})
    with open(path, "a") as f:
        f.write('ss": 0.4}}\n')
    assert [(q.step, q.metrics) for q in reader.new_points()] == [(20, {"eval_loss": 0.4})]


def test_the_job_return_value_for_hydras_optuna_sweeper_is_the_metric():
    from hpc_ft.rundir.records import NodeReport, TrainResult

    rep = NodeReport(host="h", node_rank=0, job_id="1", exit_code=0, wall_s=1.0,
                     train=TrainResult(steps=5, max_steps=5, metrics={"eval_loss": 0.25, "eval_accuracy": 0.9}))
    assert final_metric([rep], "eval_loss") == 0.25
    with pytest.raises(ConfigError, match="tune.metric=eval_accuracy"):
        final_metric([rep], "perplexity")


def test_a_trial_stopped_by_the_search_is_not_requeued(tmp_path):
    from types import SimpleNamespace

    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.node.preempt import NodePreemption
    from hpc_ft.rundir.layout import RunDir

    spec = resolve(compose_conf(["executor=slurm"], run_dir=tmp_path))
    routine = NodePreemption(spec, SimpleNamespace(requeues=0, _proc=None))
    assert routine.may_requeue()  # a real preemption: requeued
    RunDir(tmp_path).stop_request.write_text("25\n")  # written by hpc-ft tune before it signals
    assert not routine.may_requeue()


def test_a_run_checkpointed_before_tune_settings_existed_resumes_with_them():
    from hpc_ft.train.resume import compare

    new = JobConf()
    import dataclasses

    new_conf = dataclasses.asdict(new)
    old_conf = {k: v for k, v in new_conf.items() if k != "tune"}
    check = compare(old_conf, new_conf, 2, 2, step=10, where="run")
    assert check.problems == [] and check.warnings == []
