"""The whole spine for real: hpc-ft submit -> submitit -> NodeTask -> torchrun (gloo) -> reports back."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from hpc_ft.train.checkpoint import load_latest
from hpc_ft.rundir.layout import RunDir

pytestmark = pytest.mark.slow


def _results(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "results.json").read_text())


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = load_latest(run_dir)
    assert ckpt is not None, f"no checkpoint in {run_dir}"
    return ckpt.state["model"]


def _assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


def test_local_executor_two_workers_trains_and_reports(tmp_path, run_cli, synth):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    (node,) = _results(run)
    assert node["exit_code"] == 0 and node["node_rank"] == 0
    train = node["train"]
    assert train["steps"] == 20 and train["world_size"] == 2
    assert train["eval_accuracy"] > train["majority_accuracy"] + 0.2  # it really learned
    assert "eval accuracy" in res.stdout and str(run) in res.stdout
    assert (run / "job.yaml").exists() and (run / "metrics.jsonl").read_text().count("\n") >= 2


def test_two_emulated_nodes_both_report_back(tmp_path, run_cli, synth):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, "resources.nodes=2", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    nodes = _results(run)
    assert sorted(n["node_rank"] for n in nodes) == [0, 1]
    assert all(n["exit_code"] == 0 and n["train"]["world_size"] == 4 for n in nodes)
    assert RunDir(run).node(0).report.exists() and RunDir(run).node(1).report.exists()
    argv = json.loads((run / "nodes" / "node1" / "torchrun_argv.json").read_text())
    assert "--nnodes=2" in argv and any(a.startswith("--rdzv-endpoint=127.0.0.1:") for a in argv)


def test_wait_false_returns_through_a_pipe_while_the_job_runs(tmp_path, run_cli, synth):
    """run_cli reads hpc-ft's output through pipes: they close when hpc-ft exits, not when the job does."""
    import signal

    from hpc_ft.rundir.records import NodeReport
    from tests.conftest import kill_job_processes, torchrun_agent, wait_until

    run = tmp_path / "run"
    node_json = RunDir(run).node(0).report  # written atomically when the node task ends
    try:
        # The job holds at step 3 until a preemption signal (or 10 minutes): it cannot end before hpc-ft returns.
        res = run_cli("submit", *synth, "wait=false", "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=3",
                      f"hydra.run.dir={run}", timeout_s=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"hpc-ft report {run}" in res.stdout
        wait_until((run / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold")
        assert not node_json.exists()  # the job was still running when the pipes closed
        os.kill(wait_until(lambda: torchrun_agent(run / "job.yaml"), 30, "torchrun"), signal.SIGUSR2)
        wait_until(node_json.exists, 180, "the node report")
    finally:
        kill_job_processes(run / "job.yaml")  # a failed test leaves no held job behind
    report = NodeReport.load(node_json)
    assert report.train.preempted and report.train.steps == 3
    assert (run / "submitit" / "controller.log").exists()


def test_debug_executor_trains_in_process(tmp_path, run_cli, synth):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, "executor=debug", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    (node,) = _results(run)
    assert node["train"]["world_size"] == 1 and node["train"]["steps"] == 20
    assert not (run / "nodes" / "node0" / "torchrun.log").exists()  # no torchrun: pdb works here


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_mixed_precision_paths(tmp_path, run_cli, synth, dtype):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, f"precision={dtype}", "train.max_steps=6", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    (node,) = _results(run)
    assert node["train"]["precision"] == dtype and node["train"]["final_loss"] < 10
    scaler = load_latest(run).state["scaler"]
    # fp16 needs loss scaling (GradScaler state is saved and resumed); bf16 does not.
    assert ("scale" in scaler) == (dtype == "fp16")


def test_compiled_model_trains_and_checkpoints_plain_names(tmp_path, run_cli, synth):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, "train.compile=true", f"hydra.run.dir={run}", timeout_s=600)
    assert res.returncode == 0, res.stdout + res.stderr
    (node,) = _results(run)
    train = node["train"]
    assert train["steps"] == 20 and train["eval_accuracy"] > train["majority_accuracy"] + 0.2
    log = (run / "nodes" / "node0" / "torchrun.log").read_text()
    assert "train.compile=true" in log
    assert all(not k.startswith(("_orig_mod.", "module.")) for k in _final_weights(run))  # resumable by any run


def test_interrupted_run_resumes_at_same_step_with_same_weights(tmp_path, run_cli, synth):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert run_cli("submit", *synth, f"hydra.run.dir={ref}").returncode == 0
    first = run_cli("submit", *synth, f"hydra.run.dir={cut}", env={"HPC_FT_STOP_AFTER_STEP": "7"})
    assert first.returncode != 0  # stopped early: not a success
    (node,) = _results(cut)
    assert node["preempted"] and node["train"]["preempted"] and node["train"]["steps"] == 7
    assert load_latest(cut).step == 7
    second = run_cli("submit", *synth, f"hydra.run.dir={cut}")  # the same run dir: resume
    assert second.returncode == 0, second.stdout + second.stderr
    (node,) = _results(cut)
    assert node["train"]["start_step"] == 7 and node["train"]["steps"] == 20
    _assert_bitwise_equal(_final_weights(ref), _final_weights(cut))


def test_resume_is_bitwise_with_four_workers(tmp_path, run_cli, synth):
    """With 3+ ranks the all-reduce's addition order follows DDP's bucket layout: resume must restore it too."""
    four = [*synth, "resources.workers_per_node=4", "resources.cpus_per_task=4", "train.max_steps=12"]
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert run_cli("submit", *four, f"hydra.run.dir={ref}").returncode == 0
    run_cli("submit", *four, f"hydra.run.dir={cut}", env={"HPC_FT_STOP_AFTER_STEP": "6"})
    assert load_latest(cut).step == 6
    assert run_cli("submit", *four, f"hydra.run.dir={cut}").returncode == 0
    _assert_bitwise_equal(_final_weights(ref), _final_weights(cut))


def test_truncated_newest_checkpoint_falls_back_and_still_matches(tmp_path, run_cli, synth):
    ref, cut = tmp_path / "ref", tmp_path / "cut"
    assert run_cli("submit", *synth, f"hydra.run.dir={ref}").returncode == 0
    run_cli("submit", *synth, f"hydra.run.dir={cut}", env={"HPC_FT_STOP_AFTER_STEP": "7"})
    newest = load_latest(cut).path
    newest.write_bytes(newest.read_bytes()[:1000])  # a copy cut short
    second = run_cli("submit", *synth, f"hydra.run.dir={cut}")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "skipping damaged checkpoint" in (cut / "nodes" / "node0" / "torchrun.log").read_text()
    (node,) = _results(cut)
    assert node["train"]["start_step"] == 5
    _assert_bitwise_equal(_final_weights(ref), _final_weights(cut))


def test_failed_node_shows_exit_code_and_error_tail(tmp_path, run_cli, synth):
    run = tmp_path / "run"
    res = run_cli("submit", *synth, "model.hidden=-3", f"hydra.run.dir={run}")
    assert res.returncode == 1
    (node,) = _results(run)
    assert node["exit_code"] != 0 and "negative dimension" in node["error_tail"]
    # The worker's exception (recorded by @record in torchrun's error file) ends the tail, not torchrun's footer.
    assert "negative dimension" in node["error_tail"].rstrip().splitlines()[-1], node["error_tail"]
    assert "negative dimension" in res.stdout


def test_minilm_default_trains_a_few_steps(tmp_path, run_cli):
    """The real default (bundled MiniLM, chatterbot intents, bf16, 2 workers), cut to a few steps."""
    run = tmp_path / "run"
    res = run_cli("submit", "train.max_steps=3", "train.eval_every_steps=0", "telemetry=off",
                  f"hydra.run.dir={run}", timeout_s=420)
    assert res.returncode == 0, res.stdout + res.stderr
    (node,) = _results(run)
    t = node["train"]
    assert t["steps"] == 3 and t["precision"] == "bf16" and t["tokens_per_s"] > 0
    assert 0 < t["eval_accuracy"] <= 1 and t["model_params"] > 20_000_000
