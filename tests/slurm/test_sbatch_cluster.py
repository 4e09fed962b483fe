"""A script written by `hpc-ft sbatch` runs on the real cluster with no Python session open."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.slurm.conftest import assert_bitwise_equal, wait_job_done
from tests.conftest import wait_until

pytestmark = pytest.mark.slurm

SLURM = ["executor=slurm", "resources.mem_gb=1", "resources.timeout_min=10", "executor.preempt_signal_delay_s=60"]


def node_report(run_dir: Path, rank: int) -> dict:
    return json.loads((run_dir / "nodes" / f"node_{rank}.json").read_text())


def write_script(run_cli, synth, run_dir: Path, *extra: str) -> Path:
    res = run_cli("sbatch", *synth, *SLURM, *extra, f"hydra.run.dir={run_dir}")
    assert res.returncode == 0, res.stdout + res.stderr
    return run_dir / "job.sbatch"


def sbatch(*argv: str, cwd: Path, timeout_s: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["sbatch", "--parsable", *argv], cwd=cwd, capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL)


def test_generated_script_trains_on_two_nodes_and_leaves_reports(slurm_cluster, run_cli, synth, tmp_path,
                                                                  reference_weights):
    run = tmp_path / "run"
    # A hostile value rides along: it must arrive in the job as text and never run.
    script = write_script(run_cli, synth, run, "resources.nodes=2",
                          "+executor.env.HPC_FT_CANARY='$(touch CANARY) `touch CANARY2`'")
    proc = sbatch("--wait", str(script), cwd=tmp_path, timeout_s=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr + "".join(p.read_text() for p in run.glob("slurm-*.out"))
    job_id = proc.stdout.strip().split(";")[0]
    assert wait_job_done(job_id) == ["COMPLETED"]
    reports = [node_report(run, r) for r in (0, 1)]
    assert sorted(r["host"] for r in reports) == ["node01", "node02"]
    assert all(r["exit_code"] == 0 and r["train"]["world_size"] == 4 and r["train"]["steps"] == 20
               for r in reports)
    assert (run / f"slurm-{job_id}.out").exists()
    assert not list(tmp_path.rglob("CANARY*")) and not list(Path("/tmp").glob("CANARY*"))
    from hpc_ft.train.checkpoint import load_latest

    assert_bitwise_equal(load_latest(run).state["model"], reference_weights(2))
    rep = run_cli("report", str(run))
    assert rep.returncode == 0, rep.stdout + rep.stderr


def test_generated_script_requeues_on_preemption_and_resumes(slurm_cluster, run_cli, synth, tmp_path,
                                                            reference_weights):
    run = tmp_path / "run"
    script = write_script(run_cli, synth, run, "resources.nodes=1", "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=8")
    proc = sbatch(str(script), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    wait_until(lambda: (run / "nodes" / "node0" / "held_at_step").exists(), 180, "training to hold")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    assert wait_job_done(job_id) == ["REQUEUED", "COMPLETED"]
    rep = node_report(run, 0)
    assert rep["exit_code"] == 0 and rep["train"]["start_step"] == 8 and rep["train"]["steps"] == 20
    from hpc_ft.train.checkpoint import load_latest

    assert_bitwise_equal(load_latest(run).state["model"], reference_weights(1))


def test_generated_script_stops_when_requeues_are_used_up(slurm_cluster, run_cli, synth, tmp_path):
    run = tmp_path / "run"
    script = write_script(run_cli, synth, run, "resources.nodes=1", "executor.max_requeues=0",
                          "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=8")
    proc = sbatch(str(script), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    wait_until(lambda: (run / "nodes" / "node0" / "held_at_step").exists(), 180, "training to hold")
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
    assert wait_job_done(job_id) == ["FAILED"]  # exit 75 from the node: preempted, not requeued
    assert "max_requeues=0 reached" in (run / f"slurm-{job_id}.out").read_text()
    assert node_report(run, 0)["requeued"] is True


def test_a_second_sbatch_of_a_running_script_is_refused_and_leaves_the_first_alone(slurm_cluster, run_cli, synth,
                                                                                   tmp_path):
    """Issue 10.2 for script jobs: node 0 holds the run dir for its job; a second job into it cancels itself."""
    run = tmp_path / "run"
    script = write_script(run_cli, synth, run, "resources.nodes=1", "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=8")
    first = sbatch(str(script), cwd=tmp_path).stdout.strip().split(";")[0]
    try:
        wait_until(lambda: (run / "nodes" / "node0" / "held_at_step").exists(), 180, "training to hold")
        second = sbatch(str(script), cwd=tmp_path).stdout.strip().split(";")[0]
        assert wait_job_done(second) == ["CANCELLED"]
        log = (run / f"slurm-{second}.out").read_text()
        assert f"in use by job {first} (slurm)" in log, log
        assert json.loads((run / ".hpc_ft.owner.json").read_text())["job_id"] == first
        subprocess.run(["scancel", "--signal=USR2", first], check=True, timeout=30)
        assert wait_job_done(first) == ["REQUEUED", "COMPLETED"]  # untouched by the refused one
    finally:
        subprocess.run(["scancel", first], timeout=30)
    rep = node_report(run, 0)
    assert rep["exit_code"] == 0 and rep["train"]["start_step"] == 8 and rep["train"]["steps"] == 20
