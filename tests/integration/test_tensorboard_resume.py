"""TensorBoard curves survive a preemption and a crash: read back with tensorboard's own EventAccumulator, every
step is on the curve exactly once after the run resumes (issue 15.6)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import kill_job_processes, wait_until

pytestmark = pytest.mark.slow

STEPS = 12
TB = ["train.max_steps=12", "train.log_every_steps=1", "train.ckpt_every_steps=5", "train.eval_every_steps=4",
      "resources.nodes=1"]


def _scalars(logdir: Path, tag: str) -> list[int]:
    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def _overrides(synth: list[str], run: Path) -> list[str]:
    return [*(o for o in synth if not o.startswith("train.")), *TB, f"hydra.run.dir={run}"]


def test_a_preempted_then_resumed_run_has_every_step_once(tmp_path, run_cli, synth):
    run = tmp_path / "run"
    first = run_cli("submit", *_overrides(synth, run), env={"HPC_FT_STOP_AFTER_STEP": "7"})
    assert first.returncode == 75, first.stdout + first.stderr
    assert _scalars(run / "tensorboard" / "train", "train/loss") == list(range(1, 8))
    second = run_cli("submit", *_overrides(synth, run))
    assert second.returncode == 0, second.stdout + second.stderr
    tb = run / "tensorboard" / "train"
    for tag in ("train/loss", "train/lr", "train/samples_per_s"):
        assert _scalars(tb, tag) == list(range(1, STEPS + 1)), tag
    assert _scalars(tb, "eval/eval_accuracy") == [4, 8, 12]
    assert len(list(tb.glob("events.out.tfevents.*"))) == 2  # one file per attempt, read as one run


def _crash_after_step_7_then_resume(overrides: list[str], run: Path) -> None:
    """Run to step 7 (newest checkpoint: step 5), kill torchrun and its worker (a node crash, no checkpoint),
    then submit again: the resumed attempt trains steps 6 and 7 again."""
    exe = Path(sys.executable).with_name("hpc-ft")
    proc = subprocess.Popen([str(exe), "submit", *overrides, "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=7"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    try:
        wait_until((run / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold at step 7")
        kill_job_processes(run / "job.yaml")
        proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert _scalars(run / "tensorboard" / "train", "train/loss") == list(range(1, 8))
    resumed = subprocess.run([str(exe), "submit", *overrides], capture_output=True, text=True,
                             timeout=300, stdin=subprocess.DEVNULL)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in (run / "nodes" / "node0" / "torchrun.log").read_text()


def test_a_crashed_run_resumed_from_an_earlier_checkpoint_drops_the_steps_it_trains_again(tmp_path, synth):
    """Killed after step 7 with its newest checkpoint at step 5: steps 6 and 7 are trained and logged again, and
    TensorBoard's purge_step keeps only the second time (without it the curve holds 6 and 7 twice)."""
    run = tmp_path / "run"
    _crash_after_step_7_then_resume(_overrides(synth, run), run)
    assert _scalars(run / "tensorboard" / "train", "train/loss") == list(range(1, STEPS + 1))


def test_telemetry_curves_continue_across_a_requeue_without_repeating_a_tick(tmp_path, run_cli, synth):
    run = tmp_path / "run"
    overrides = [o for o in _overrides(synth, run) if o != "telemetry=off"] + ["telemetry.interval_s=0.2"]
    assert run_cli("submit", *overrides, env={"HPC_FT_STOP_AFTER_STEP": "7"}).returncode == 75
    first = _scalars(run / "tensorboard" / "node0", "host/cpu_util_pct")
    res = run_cli("submit", *overrides)
    assert res.returncode == 0, res.stdout + res.stderr
    steps = _scalars(run / "tensorboard" / "node0", "host/cpu_util_pct")
    assert len(steps) == len(set(steps)) and steps == sorted(steps)
    assert steps[:len(first)] == first and len(steps) > len(first) and steps[len(first)] > first[-1]


def test_mlflow_keeps_one_run_across_a_preemption_and_resume(tmp_path, run_cli, synth):
    """tracking=mlflow: the resumed attempt logs into the same MLflow run (local file store in the run dir)."""
    from mlflow.tracking import MlflowClient

    run = tmp_path / "run"
    overrides = [*_overrides(synth, run), "tracking=mlflow"]
    assert run_cli("submit", *overrides, env={"HPC_FT_STOP_AFTER_STEP": "7"}).returncode == 75
    first = (run / "mlflow_run.json").read_text()
    res = run_cli("submit", *overrides)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (run / "mlflow_run.json").read_text() == first
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store asks for an opt-in
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    (exp,) = [e for e in client.search_experiments() if e.name == "hpc_ft"]
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["optim.lr"] == "0.01"
    steps = [m.step for m in client.get_metric_history(mlrun.info.run_id, "train/loss")]
    assert sorted(steps) == list(range(1, STEPS + 1))
    assert sorted(m.step for m in client.get_metric_history(mlrun.info.run_id, "eval/eval_accuracy")) == [4, 8, 12]
    assert _scalars(run / "tensorboard" / "train", "train/loss") == list(range(1, STEPS + 1))  # TensorBoard too


def test_mlflow_marks_the_steps_a_crashed_run_trains_again_and_reads_each_step_once(tmp_path, synth):
    """MLflow cannot delete a step's values: after the crash the run's history holds steps 6 and 7 twice, the run
    says so (tags hpc_ft.resumed_from_step=5, hpc_ft.retrained_steps=6-7), and hpc_ft's reader of a curve,
    metric_history, gives every step once with the value of the attempt that went on (metrics.jsonl's last)."""
    from mlflow.tracking import MlflowClient

    from hpc_ft.train.tracking import RESUMED_FROM_TAG, RETRAINED_TAG, metric_history

    run = tmp_path / "run"
    _crash_after_step_7_then_resume([*_overrides(synth, run), "tracking=mlflow"], run)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3's file store asks for an opt-in
    client = MlflowClient(tracking_uri=(run / "mlruns").as_uri())
    (exp,) = [e for e in client.search_experiments() if e.name == "hpc_ft"]
    (mlrun,) = client.search_runs([exp.experiment_id])
    assert mlrun.info.status == "FINISHED"
    assert mlrun.data.tags[RESUMED_FROM_TAG] == "5" and mlrun.data.tags[RETRAINED_TAG] == "6-7", mlrun.data.tags
    raw = sorted(m.step for m in client.get_metric_history(mlrun.info.run_id, "train/loss"))
    assert raw == sorted([*range(1, STEPS + 1), 6, 7])  # what MLflow keeps: both values of steps 6 and 7
    curve = metric_history(client, mlrun.info.run_id, "train/loss")
    assert [m.step for m in curve] == list(range(1, STEPS + 1))
    last_loss = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "loss" in rec:
            last_loss[rec["step"]] = rec["loss"]
    assert [m.value for m in curve] == pytest.approx([last_loss[s] for s in range(1, STEPS + 1)])
