"""A user's own torchrun script through hpc_ft for real: submitit's local executor, torchrun (gloo), reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hpc_ft.rundir.layout import RunDir

pytestmark = pytest.mark.slow

SCRIPTS = Path(__file__).parent / "scripts"
FAST = ["resources.workers_per_node=1", "telemetry.interval_s=0.2", "executor.poll_interval_s=0.2"]


def _results(run: Path) -> list[dict]:
    return json.loads(RunDir(run).results.read_text())


def test_a_plain_ddp_script_trains_on_two_emulated_nodes(tmp_path, run_cli):
    """The script imports nothing from hpc_ft: torchrun's variables, its own checkpoint, hpc_ft's telemetry."""
    run = tmp_path / "run"
    res = run_cli("submit", f"script.path={SCRIPTS / 'plain_ddp.py'}", "script.args=[--steps,6]",
                  "resources.nodes=2", *FAST, f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    final = json.loads((run / "final.json").read_text())
    assert final == {"step": 6, "world_size": 2, "resumed_from": 0}  # one DDP world across both nodes
    nodes = _results(run)
    assert sorted(n["node_rank"] for n in nodes) == [0, 1] and all(n["exit_code"] == 0 for n in nodes)
    assert all(n["train"] is None for n in nodes)  # no progress reported: no training figures, still a report
    assert all(n["telemetry"] for n in nodes)  # the sampler ran beside the script on every node
    argv = json.loads(RunDir(run).node(1).torchrun_argv.read_text())
    assert argv[-3:] == [str(SCRIPTS / "plain_ddp.py"), "--steps", "6"] and "--nnodes=2" in argv
    assert "run report" in res.stdout and RunDir(run).run_report.exists()


def test_a_scripts_progress_shows_throughput_and_its_metric_in_the_report(tmp_path, run_cli):
    run = tmp_path / "run"
    res = run_cli("submit", f"script.path={SCRIPTS / 'contract_script.py'}", "script.args=[--steps,12]", *FAST,
                  f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    (node,) = _results(run)
    train = node["train"]
    assert train["steps"] == 12 and train["samples_per_s"] > 0 and train["tokens_per_s"] == pytest.approx(
        16 * train["samples_per_s"], rel=0.05)
    assert train["eval_accuracy"] == pytest.approx(0.62) and train["flops_per_sample"] == 108
    report = json.loads(RunDir(run).run_report.read_text())
    assert report["throughput"]["samples_per_s"] == train["samples_per_s"]
    assert report["metrics"] == {"eval_accuracy": pytest.approx(0.62)}
    assert "metrics: eval_accuracy 0.62" in res.stdout and "script metrics: eval_accuracy 0.62" in res.stdout
    # Not the loop's lines, which would read "-" for every script: its majority baseline, its precision.
    assert "majority baseline" not in res.stdout and "precision:" not in res.stdout
    # Its steps are its own: no "of train.max_steps" (the loop's 200 by default) in status and list.
    status = run_cli("status", str(run)).stdout
    (step_line,) = [ln for ln in status.splitlines() if ln.startswith("step ")]
    assert step_line.startswith("step 12") and " of " not in step_line, status
    listed = run_cli("list", str(tmp_path)).stdout
    (row,) = [ln for ln in listed.splitlines() if str(run) in ln]
    assert row.split()[:4] == ["COMPLETED", "eval_accuracy=0.62", "12", "-"], listed  # a CPU job: no GPU-hours


def test_a_sweep_of_a_script_shows_each_jobs_metric_in_the_sweep_results(tmp_path, run_cli):
    sweep = tmp_path / "sweep"
    res = run_cli("submit", "-m", f"script.path={SCRIPTS / 'contract_script.py'}",
                  "script.args=[--steps,6,--lr,0.1],[--steps,8,--lr,0.2]", *FAST, f"hydra.sweep.dir={sweep}",
                  timeout_s=600)
    assert res.returncode == 0, res.stdout + res.stderr
    rep = run_cli("report", str(sweep), timeout_s=120)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    jobs = json.loads((sweep / "report" / "sweep.json").read_text())
    acc = {j["sweep_job"]: j["metrics"]["eval_accuracy"] for j in jobs}
    assert acc == {"0": pytest.approx(0.56), "1": pytest.approx(0.58)}
    assert all(j["throughput"]["samples_per_s"] > 0 for j in jobs)
    assert "0.560" in rep.stdout and "0.580" in rep.stdout  # the eval column (a known metric: "eval accuracy")


def test_a_failing_script_shows_its_exit_status_and_error_tail(tmp_path, run_cli):
    run = tmp_path / "run"
    res = run_cli("submit", f"script.path={SCRIPTS / 'failing_script.py'}", "resources.workers_per_node=2",
                  "telemetry=off", "executor.poll_interval_s=0.2", f"hydra.run.dir={run}")
    assert res.returncode == 1, res.stdout + res.stderr
    (node,) = _results(run)
    assert node["exit_code"] == 1 and not node["preempted"]
    # The failed rank's own traceback (torchrun names it the root cause), not torchrun's footer: the error is last.
    tail = node["error_tail"].rstrip().splitlines()
    assert tail[0].startswith("rank 1 failed (exit code 1") and "Traceback (most recent call last):" in tail
    assert tail[-1] == "ValueError: bad batch at step 2 on rank 1 (on purpose)", node["error_tail"]
    assert "error output, last lines" in res.stdout and "bad batch at step 2" in res.stdout


def test_a_script_asking_for_requeue_is_preempted_and_resumes_from_its_checkpoint(tmp_path, run_cli):
    """exit_for_requeue after its checkpoint: the run is resumable, not failed; run again, it goes on from there."""
    run = tmp_path / "run"
    args = [f"script.path={SCRIPTS / 'contract_script.py'}", "script.args=[--steps,8,--stop-after,3]",
            "resources.workers_per_node=2", "telemetry=off", "executor.poll_interval_s=0.2", f"hydra.run.dir={run}"]
    first = run_cli("submit", *args)
    assert first.returncode == 75, first.stdout + first.stderr
    (node,) = _results(run)
    assert node["preempted"] and node["train"]["preempted"] and node["train"]["steps"] == 3
    assert "preempted at step 3: the script asked to be requeued" in first.stdout
    again = run_cli("submit", *args)
    assert again.returncode == 0, again.stdout + again.stderr
    (node,) = _results(run)
    assert node["train"]["steps"] == 8 and node["train"]["start_step"] == 3 and not node["preempted"]
