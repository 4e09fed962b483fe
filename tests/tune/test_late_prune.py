"""A trial the pruner stops is pruned only if it really stopped early. A short trial can train to max_steps before
the stop reaches it (trial 4 of a user's search: "pruned after step 20", then its train.json said 60 of 60 steps,
not preempted, with a better eval_loss than the "best" trial): it is a completed trial, with its final metric.

The driver is exercised in this process on a trial whose run dir is written here, as its job would leave it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpc_ft.config.compose import compose_conf
from hpc_ft.rundir.evals import append_eval
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.records import NodeReport, TrainResult
from hpc_ft.submit.executors import resolve
from hpc_ft.tune.driver import Driver
from hpc_ft.tune.results import load_results
from hpc_ft.tune.space import parse_space
from hpc_ft.tune.trials import TrialJob, TrialOutcome, verdict
from tests.tune.conftest import study_trials

MAX = 60
TRIAL = ["model=mlp", "data=synthetic", "precision=fp32", "telemetry=off", f"train.max_steps={MAX}",
         "train.eval_every_steps=10", "tune.sampler=random"]
SPACE = "optim.lr=choice(0.1,0.01)"
WALL_S = 36.0  # the node's wall time: 0.01 node-hours


def node(steps: int, preempted: bool = False, exit_code: int = 0, rank: int = 0) -> NodeReport:
    train = TrainResult(steps=steps, max_steps=MAX, preempted=preempted, metrics={"eval_loss": 0.5})
    return NodeReport(host="h", node_rank=rank, job_id="1", exit_code=exit_code, wall_s=WALL_S, train=train,
                      preempted=preempted or exit_code == 75)


@pytest.mark.parametrize("reports, stop, value, expected", [
    # asked to stop, yet trained every step: complete, whether torchrun exited 0 or of the late signal (exit 1)
    ([node(MAX)], True, True, "complete"),
    ([node(MAX, exit_code=1)], True, True, "complete"),
    ([node(MAX), node(MAX, exit_code=1, rank=1)], True, True, "complete"),
    # really stopped at a checkpoint before max_steps: pruned
    ([node(42, preempted=True, exit_code=75)], True, True, "pruned"),
    ([node(MAX), node(42, preempted=True, exit_code=75, rank=1)], True, True, "pruned"),  # one node stopped short
    ([], True, True, "pruned"),  # no result at all: nothing says it finished
    # never asked to stop: as before
    ([node(MAX)], False, True, "complete"),
    ([node(MAX, exit_code=1)], False, True, "failed"),
    ([node(MAX)], False, False, "failed"),  # no evaluation of the metric
])
def test_a_trial_that_trained_to_max_steps_after_a_stop_request_is_complete(reports, stop, value, expected):
    out = TrialOutcome(reports=reports, train=reports[0].train if reports else None, unit_hours=0.01)
    assert verdict(out, MAX, stop_requested=stop, has_value=value) == expected


def _driver(sweep: Path, said: list[str]) -> Driver:
    def compose(ovs, run_dir):
        return resolve(compose_conf([*TRIAL, *ovs], run_dir=run_dir), ovs)

    return Driver(sweep, compose_conf(TRIAL, run_dir=sweep / "base"), parse_space([SPACE]), compose, say=said.append)


def _start(d: Driver, number_of_steps_evaluated: int, losses: dict[int, float]) -> TrialJob:
    """A trial started (its run dir as its job writes it) with its evaluations up to a step already written."""
    trial = d.study.ask(fixed_distributions=d.space.params)
    ovs = d.space.overrides(trial.params)
    spec = d.compose(ovs, d.sweep_dir / str(trial.number))
    rd = RunDir.of(spec)
    rd.path.mkdir(parents=True, exist_ok=True)
    with open(rd.metrics, "a") as f:
        for step in range(10, number_of_steps_evaluated + 1, 10):
            append_eval(f, step, {"eval_loss": losses[step]})
    t = TrialJob(trial, spec, d.size, job_id="999999999", started_unix_s=0.0)
    d.running[trial.number] = t
    return t


@pytest.mark.parametrize("trained_to", [MAX, 42])
def test_the_driver_tells_a_trial_that_finished_before_its_stop_as_complete(tmp_path, monkeypatch, trained_to):
    said: list[str] = []
    d = _driver(tmp_path / "sw", said)
    losses = {10: 0.9, 20: 0.8, 30: 0.5, 40: 0.3, 50: 0.2, 60: 0.1}
    t = _start(d, 20, losses)
    # The pruner decides at step 20; the stop goes out (as the local executor's signal to a live torchrun).
    monkeypatch.setattr(t.trial, "should_prune", lambda: 20 in t.reported)
    monkeypatch.setattr(TrialJob, "request_stop", lambda self: True)
    d._observe(t)
    assert t.stop_requested_at == 20
    # The job had trained on meanwhile: its later evaluations land after the driver's last look, then it ends.
    rd = RunDir.of(t.spec)
    with open(rd.metrics, "a") as f:
        for step in range(30, trained_to + 1, 10):
            append_eval(f, step, {"eval_loss": losses[step]})
    stopped = trained_to < MAX
    report = node(trained_to, preempted=stopped, exit_code=75 if stopped else 1)  # exit 1: torchrun got the signal
    report.save(rd.node(0).report)
    d._finish(t)

    (ft,) = study_trials(tmp_path / "sw")
    res = load_results(tmp_path / "sw")
    (row,) = res.rows
    if stopped:  # really stopped early: pruned, at the value where the pruner decided
        assert ft.state.name == "PRUNED" and ft.value == 0.8 and max(ft.intermediate_values) == 20
        assert row.state == "pruned" and row.value == 0.8 and res.best is None
        assert any(f"trial {ft.number} stopped at step 42" in s for s in said), said
    else:  # complete with its final metric, the best trial, its whole curve in Optuna as a completed trial's
        assert ft.state.name == "COMPLETE" and ft.value == 0.1, (ft.state, ft.value)
        assert sorted(ft.intermediate_values) == [10, 20, 30, 40, 50, 60]
        assert row.state == "complete" and row.value == 0.1 and row.steps == MAX
        assert res.best is not None and res.best.number == ft.number
        last = said[-1]
        assert "complete: eval_loss 0.1 at step 60" in last and "finished before the stop took effect" in last
        assert not any("stopped at step" in s for s in said), said
    # Its node-hours counted once, in the driver's budget and in the report.
    assert d.spent_unit_hours() == pytest.approx(WALL_S / 3600) == res.spent_unit_hours
    assert json.loads(json.dumps(ft.user_attrs))["unit_hours"] == pytest.approx(WALL_S / 3600)
