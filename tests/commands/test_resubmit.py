"""hpc-ft submit --from RUN_DIR --apply-advice: the report's right-sizing overrides applied in one step (15.5)."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow
def test_apply_advice_resubmits_with_the_reports_overrides(tmp_path, run_cli, synth):
    run = tmp_path / "run"
    overrides = [o for o in synth if o != "telemetry=off"] + ["train.max_steps=4", "resources.nodes=1"]
    res = run_cli("submit", *overrides, f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    advice = json.loads((run / "report" / "report.json").read_text())["advice"]
    assert advice, "a 4-step CPU job with a 60-minute limit gets at least the time advice"
    advised = [f"{a['key']}={a['value']}" for a in advice]

    dry = run_cli("submit", "--from", str(run), "--apply-advice", "optim.lr=0.02", "dry_run=true", cwd=tmp_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    for o in advised:
        assert f"advice applied: {o}" in dry.stdout
    job = json.loads(dry.stdout[dry.stdout.index("{"):])
    assert set(advised) <= set(job["overrides"]) and job["overrides"][-2:] == ["optim.lr=0.02", "dry_run=true"]
    assert not any(o.startswith("hydra.run.dir=") for o in job["overrides"])  # a new run dir
    assert "optim.lr=0.01" not in job["overrides"]  # a later override wins: it replaced the run's own

    same = run_cli("submit", "--from", str(run), "dry_run=true", cwd=tmp_path)  # no advice: the job as it was
    assert same.returncode == 0 and "advice applied" not in same.stdout


def test_bad_resubmissions_are_refused_with_exit_2(tmp_path, run_cli):
    for argv, key in ((["--apply-advice"], "--apply-advice"), (["--from", str(tmp_path)], "--from"),
                      (["--from"], "--from")):
        res = run_cli("submit", *argv, "dry_run=true", cwd=tmp_path)
        assert res.returncode == 2, res.stdout + res.stderr
        assert key in res.stderr and "Traceback" not in res.stderr
