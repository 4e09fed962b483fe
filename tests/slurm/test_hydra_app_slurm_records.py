"""A Hydra app's Slurm job array on the real local Slurm (scripts/local-slurm.sh; trial 4, problem 4): while a task
runs, `hpc-ft status SWEEP_DIR/N` names it as Slurm's, under its array id (the sweep's manifest.json), where it said
"no job recorded"."""

from __future__ import annotations

import re

import pytest

from hpc_ft.rundir.layout import SweepDir
from hpc_ft.rundir.records import SweepManifest
from tests.byos.test_hydra_app_job_records import start_holding_app
from tests.conftest import wait_until
from tests.slurm.conftest import wait_job_done

pytestmark = pytest.mark.slurm

SLURM = ["hydra.launcher.executor=slurm", "hydra.launcher.mem_gb=1", "hydra.launcher.cpus_per_task=1",
         "hydra.launcher.timeout_min=5", "hydra.launcher.telemetry=false"]


def test_a_running_task_of_a_hydra_apps_array_is_slurms_under_its_array_id(slurm_cluster, run_cli,
                                                                           tmp_path):
    import subprocess

    proc, sweep, rec = start_holding_app(tmp_path, *SLURM)
    array = None
    try:
        manifest = wait_until(lambda: SweepDir(sweep).manifest.exists() and (
            m := SweepManifest.load(SweepDir(sweep).manifest)).state != "submitting" and m, 120,
            "the array's ids in the manifest")
        ids = [j.job_id for j in manifest.jobs]
        assert manifest.executor == "slurm" and all(re.fullmatch(r"\d+_[01]", i or "") for i in ids), manifest
        array = ids[0].split("_")[0]
        wait_until(lambda: (rec / "1.started").exists(), 120, "task 0 to run")
        text = run_cli("status", str(sweep / "0"), timeout_s=60).stdout
        assert f"job {ids[0]} (Slurm): RUNNING" in text, text
    finally:
        (rec / "go").write_text("")
        out, _ = proc.communicate(timeout=180)
        if proc.returncode != 0 and array:
            subprocess.run(["scancel", array], timeout=30)
    assert proc.returncode == 0, out
    assert SweepManifest.load(SweepDir(sweep).manifest).state == "finished"
    # The values arrive before the tasks' steps end: the cluster is left idle for the next test.
    assert [wait_job_done(i, 120) for i in ids] == [["COMPLETED"]] * 2
