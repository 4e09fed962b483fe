"""Resuming a run dir with a changed job, and datasets too small to train, for real (hpc-ft, submitit, torchrun)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_ft.rundir.spec import spec_path, write_spec
from hpc_ft.train.checkpoint import list_checkpoints, load_latest

pytestmark = pytest.mark.slow

# The B, made quick: the MLP on synthetic clusters, 2 CPU workers.
B = ["model=mlp", "data=synthetic", "precision=fp32", "train.max_steps=20", "train.ckpt_every_steps=5",
     "train.eval_every_steps=0", "telemetry=off"]


def _train_json(run: Path) -> dict:
    return json.loads((run / "nodes" / "node0" / "train.json").read_text())


def test_resume_in_another_precision_continues_with_a_fresh_scaler_and_a_warning(tmp_path, run_cli):
    """bf16 for 10 steps, then fp16 in the same dir: it crashed every rank on the GradScaler's empty state."""
    run = tmp_path / "run"
    first = run_cli("submit", *B, "precision=bf16", "train.max_steps=10", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stdout + first.stderr
    second = run_cli("submit", *B, "precision=fp16", f"hydra.run.dir={run}")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Traceback" not in second.stdout + second.stderr
    said = "with precision.dtype changed from bf16 to fp16"
    assert said in " ".join(second.stdout.split())  # hpc-ft's warning (rich may wrap it)
    train = _train_json(run)
    assert train["start_step"] == 10 and train["steps"] == 20 and train["precision"] == "fp16"
    assert any(said in w for w in train["warnings"])
    assert said in (run / "nodes" / "node0" / "torchrun.log").read_text()
    ckpt = load_latest(run)
    assert ckpt.step == 20 and "scale" in ckpt.state["scaler"]  # the fresh scaler ran and is saved
    assert ckpt.state["conf"]["precision"]["dtype"] == "fp16"


def test_resume_with_a_new_lr_and_world_size_uses_them(tmp_path, run_cli):
    """A new optim.lr used to be overwritten by the checkpointed optimizer and schedule: silently the old lr."""
    from hpc_ft.train.loop import lr_lambda

    run = tmp_path / "run"
    common = [*B, "train.warmup_steps=0", "train.log_every_steps=1", "train.ckpt_every_steps=4"]
    first = run_cli("submit", *common, "optim.lr=0.001", f"hydra.run.dir={run}", env={"HPC_FT_STOP_AFTER_STEP": "4"})
    assert load_latest(run).step == 4, first.stdout + first.stderr
    res = run_cli("submit", *common, "optim.lr=0.1", "resources.workers_per_node=1", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    train = _train_json(run)
    assert train["world_size"] == 1 and train["start_step"] == 4 and train["steps"] == 20
    text = " ".join(train["warnings"])
    assert "optim.lr changed from 0.001 to 0.1" in text and "world size changed from 2 to 1" in text
    lrs = {r["step"]: r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
           if "lr" in r}  # logging windows; evaluations are lines of their own
    assert lrs[4] == pytest.approx(0.001 * lr_lambda(4, 0, 20, 0.1))
    assert lrs[5] == pytest.approx(0.1 * lr_lambda(5, 0, 20, 0.1))  # the schedule continues at the new lr


def test_refused_change_exits_2_before_dispatch_and_overwrites_nothing(tmp_path, run_cli):
    run = tmp_path / "run"
    assert run_cli("submit", *B, "train.max_steps=5", f"hydra.run.dir={run}").returncode == 0
    before = {p: p.read_bytes() for p in [run / "job.yaml", *(p for _, p in list_checkpoints(run))]}
    jobs_before = sorted(os.listdir(run / "submitit"))
    res = run_cli("submit", *B, "train.global_batch_size=32", "model.hidden=32", f"hydra.run.dir={run}")
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr
    assert "Traceback" not in err + res.stdout
    assert "train.global_batch_size=32: differs from the run being resumed" in err and "was 16" in err
    assert "model.hidden=32" in err and "pass model.hidden=64" in err and "new run dir" in err
    after = {p: p.read_bytes() for p in [run / "job.yaml", *(p for _, p in list_checkpoints(run))]}
    assert after == before and sorted(os.listdir(run / "submitit")) == jobs_before  # nothing written, nothing run
    assert not list(run.glob("job.*.yaml"))


def test_empty_train_split_is_refused_before_dispatch(tmp_path, run_cli):
    run = tmp_path / "run"
    res = run_cli("submit", *B, "data.num_samples=1", f"hydra.run.dir={run}")
    assert res.returncode == 2
    assert "data.num_samples=1: leaves an empty train split" in res.stderr and "Fix:" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    assert not (run / "job.yaml").exists() and not (run / "submitit").exists()


def test_global_batch_larger_than_the_train_split_warns(tmp_path, run_cli):
    res = run_cli("submit", *B, "data.num_samples=12", "train.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "is smaller than the global batch" in " ".join(res.stdout.split())
    assert any("smaller than the global batch" in w for w in _train_json(tmp_path / "run")["warnings"])


USER_DATA = '''
import torch
from hpc_ft.train.data import TaskData

def empty_test_split(**size_settings):  # the synthetic config's keys come along
    x = torch.randn(40, 16)
    y = torch.randint(0, 4, (40,))
    return TaskData(train={"features": x[1:], "labels": y[1:]}, test={"features": x[:0], "labels": y[:0]},
                    num_labels=4)
'''


def _torchrun(spec_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
            "hpc_ft.train", str(spec_path)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL,
                          env={**os.environ, **env})


def test_users_empty_dataset_is_one_clear_error_on_the_workers(tmp_path, run_cli):
    """Sizes of a user's dataset are known only once built: the workers exit 2 with the message, no traceback."""
    (tmp_path / "user_data.py").write_text(USER_DATA)
    run = tmp_path / "run"
    res = run_cli("submit", *B, "data._target_=user_data.empty_test_split", f"hydra.run.dir={run}",
                  env={"PYTHONPATH": str(tmp_path)})
    assert res.returncode == 1, res.stdout + res.stderr  # dispatched (sizes unknown before), the node failed
    out = " ".join(res.stdout.split())
    assert "rank 0 failed (exit code 2" in out and "invalid job configuration" in out  # the node's error tail
    assert "data._target_='user_data.empty_test_split': leaves an empty test split" in out
    worker_lines = [ln for ln in (run / "nodes" / "node0" / "torchrun.log").read_text().splitlines()
                    if ln.startswith("[rank")]  # torchrun's own closing summary comes after them
    assert worker_lines and not any("Traceback" in ln for ln in worker_lines)
    assert "exitcode  : 2" in (run / "nodes" / "node0" / "torchrun.log").read_text()


def test_worker_refuses_a_checkpoint_of_another_job(tmp_path, synth):
    """The worker's own check: job.yaml edited by hand after the checkpoint was written."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve

    run = tmp_path / "run"
    spec = resolve(compose_conf([*B, "train.max_steps=2"], run_dir=run))
    write_spec(spec)
    assert _torchrun(spec_path(spec), {}).returncode == 0
    changed = resolve(compose_conf([*B, "train.max_steps=4", "train.seed=9"], run_dir=run))
    write_spec(changed)
    res = _torchrun(spec_path(changed), {})
    assert "exitcode  : 2" in res.stderr, res.stderr[-3000:]
    assert "[rank0]:   - train.seed=9: differs from the run being resumed" in res.stderr
    assert load_latest(run).step == 2  # nothing trained on top
