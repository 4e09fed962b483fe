"""What a Hydra app's sweep records of its jobs (trial 4, problem 4): manifest.json in the sweep dir, as hpc_ft's own
sweeps keep it (every job's run dir, its scheduler id once submitted, its outcome), and each node's attempt.json
when its run starts; so `hpc-ft status` names the job of a task that is still running (it said "no job recorded").
On the local executor here; tests/byos/test_hydra_app_slurm_records.py has the Slurm array."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.records import NodeAttempt, SweepManifest
from hydra_plugins.hpc_ft_launcher.app import AppJob
from tests.conftest import wait_until

HOLDING_APP = '''
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    """Says it started, then holds until the test lets it go (at most 120 s)."""
    rec = Path(cfg.rec)
    (rec / f"{cfg.lr}.started").write_text("")
    deadline = time.monotonic() + 120
    while not (rec / "go").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return float(cfg.lr)


if __name__ == "__main__":
    main()
'''

LOCAL = ["hydra.launcher.executor=local", "hydra.launcher.timeout_min=5", "hydra.launcher.telemetry=false",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def start_holding_app(tmp_path: Path, *launcher: str) -> tuple[subprocess.Popen, Path, Path]:
    """The holding app's sweep of two jobs (lr 1 and 2) in a child process: (process, sweep dir, record dir)."""
    app, rec, sweep = tmp_path / "holding_app.py", tmp_path / "rec", tmp_path / "sweep"
    app.write_text(HOLDING_APP)
    rec.mkdir()
    proc = subprocess.Popen([sys.executable, str(app), "-m", "hydra/launcher=hpc_ft", "+lr=1,2", f"+rec={rec}",
                             *launcher, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, sweep, rec


@pytest.mark.slow
def test_a_local_apps_running_task_names_its_job_and_the_manifest_lists_every_job(tmp_path, run_cli):
    proc, sweep, rec = start_holding_app(tmp_path, *LOCAL)
    try:
        wait_until(lambda: (rec / "1.started").exists() and (rec / "2.started").exists(), 120, "both jobs to start")
        manifest = SweepManifest.load(SweepDir(sweep).manifest)  # written before anything was submitted
        assert manifest.executor == "local" and manifest.state == "submitting", manifest
        assert [(j.num, j.run_dir) for j in manifest.jobs] == [(0, str(sweep / "0")), (1, str(sweep / "1"))]
        attempt = NodeAttempt.load(RunDir(sweep / "0").node(0).attempt)  # the node's record, as its run starts
        assert attempt.job_id.isdigit() and attempt.requeues == 0, attempt
        text = run_cli("status", str(sweep / "0"), timeout_s=60).stdout
        assert f"job {attempt.job_id} (local process)" in text and "no job recorded" not in text, text
    finally:
        (rec / "go").write_text("")
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    manifest = json.loads(SweepDir(sweep).manifest.read_text())
    assert manifest["state"] == "finished" and manifest["wait"] is True, manifest
    ids = [j["job_id"] for j in manifest["jobs"]]
    assert all(i and i.isdigit() for i in ids) and [j["ok"] for j in manifest["jobs"]] == [True, True], manifest
    assert ids[0] == attempt.job_id  # the manifest and the node name the same job
    text = run_cli("status", str(sweep), timeout_s=60).stdout
    assert "(2 job(s))" in text and all(re.search(rf"\b{i}\s+COMPLETED", text) for i in ids), text


def test_a_requeued_app_job_records_its_run_in_the_nodes_attempt(tmp_path):
    """submitit runs checkpoint()'s resubmission after preemption: its node records requeue 1 under the same id."""
    from types import SimpleNamespace

    job = AppJob(None, None, None, ["+lr=1"], 0, str(tmp_path / "0"), {})
    again = job.checkpoint().function
    assert (job.requeues, again.requeues) == (0, 1)
    again._record_attempt(SimpleNamespace(global_rank=0, job_id="12_1"))
    attempt = NodeAttempt.load(RunDir(tmp_path / "0").node(0).attempt)
    assert (attempt.job_id, attempt.requeues) == ("12_1", 1)
