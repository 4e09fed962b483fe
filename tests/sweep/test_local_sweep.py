"""Real local sweeps: submitit LocalExecutor jobs, real torchrun, every node's report of every job gathered."""

import json
import subprocess

import pytest
import yaml

from hpc_ft.rundir.records import NodeReport

from tests.conftest import wait_until

from .conftest import CLI, TINY, hpc_ft
from hpc_ft.rundir.layout import RunDir

pytestmark = pytest.mark.slow


def multirun(overrides):
    """Hydra's multirun in this process, with the CLI's submit task: returns the launcher's JobReturns."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path
    from hydra.core.global_hydra import GlobalHydra

    from hpc_ft import CONF_DIR
    from hpc_ft.cli import _submit_task
    from hpc_ft.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    h = Hydra.create_main_hydra2(task_name="hpc_ft", config_search_path=create_config_search_path(str(CONF_DIR)))
    try:
        return h.multirun(config_name="config", task_function=_submit_task, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def test_job_returns_carry_every_nodes_report(tmp_path):
    sweep = tmp_path / "sw"
    returns = multirun(["resources.nodes=1,2", *TINY, f"hydra.sweep.dir={sweep}"])
    rets = [r for batch in returns for r in batch]
    assert [r.overrides[0] for r in rets] == ["resources.nodes=1", "resources.nodes=2"]
    for n, ret in enumerate(rets, start=1):
        reports = ret.return_value  # raises if the job failed
        assert [type(r) for r in reports] == [NodeReport] * n
        assert [r.node_rank for r in reports] == list(range(n)) and all(r.ok for r in reports)
        assert all(r.train.steps == 10 for r in reports)
        run = sweep / str(rets.index(ret))
        assert ret.working_dir is not None and ret.hydra_cfg.hydra.runtime.output_dir == str(run)
        assert yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())[0] == f"resources.nodes={n}"
        assert (run / ".hydra" / "config.yaml").exists() and (run / "job.yaml").exists()
        rd = RunDir(run)  # one report per node of this job, and no other node
        assert [r for r in sorted(rd.node_ranks()) if rd.node(r).report.exists()] == list(range(n))
        assert len(json.loads((run / "results.json").read_text())) == n
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert manifest["state"] == "finished" and [j["ok"] for j in manifest["jobs"]] == [True, True]
    assert all(j["job_id"] for j in manifest["jobs"]) and (sweep / "multirun.yaml").exists()


def _span(run):
    """(start, end) of a job's node 0: its torchrun argv is written at start, train.json when training ends."""
    node = run / "nodes" / "node0"
    return (node / "torchrun_argv.json").stat().st_mtime_ns, (node / "train.json").stat().st_mtime_ns


def test_start_order_follows_priority_one_at_a_time(tmp_path):
    sweep = tmp_path / "sw"
    res = hpc_ft(["submit", "-m", "sched.priority=1,3,2", "sched.order=priority", "sched.array_parallelism=1",
                  *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    spans = {n: _span(sweep / str(n)) for n in range(3)}
    order = sorted(spans, key=lambda n: spans[n][0])
    assert order == [1, 2, 0]  # highest priority first
    for prev, nxt in zip(order, order[1:]):
        assert spans[nxt][0] >= spans[prev][1]  # parallelism 1: the next starts after the previous ended
    plan = json.loads((sweep / "manifest.json").read_text())["plan"]
    assert plan["order"] == ["1", "2", "0"] and (sweep / "plan.txt").read_text().startswith("sweep plan: 3 jobs")


def test_a_failed_job_fails_the_sweep_and_the_others_are_still_gathered(tmp_path):
    sweep = tmp_path / "sw"
    tiny_with_telemetry = [o for o in TINY if o != "telemetry=off"]  # the sweep report needs it, as a single run's
    res = hpc_ft(["submit", "-m", "model._target_=hpc_ft.train.tasks.synthetic.MLPClassifier,no.such.Model",
                  *tiny_with_telemetry, f"hydra.sweep.dir={sweep}"], tmp_path)
    assert res.returncode == 1
    assert "1 of 2 sweep job(s) failed: #1 (node 0 exit 1)" in res.stderr and "Traceback" not in res.stderr
    ok, bad = (json.loads((sweep / str(n) / "results.json").read_text()) for n in range(2))
    assert ok[0]["exit_code"] == 0 and bad[0]["exit_code"] != 0 and bad[0]["error_tail"]
    # Like a single run, the sweep prints its results (one row per job) and writes its report: what
    # `hpc-ft report SWEEP_DIR` writes, the failed job's included.
    assert f"sweep results: 2 job(s), run dirs {sweep}/<job>" in res.stdout
    train = json.loads((sweep / "0" / "nodes" / "node0" / "train.json").read_text())
    row0, row1 = (next(line for line in res.stdout.splitlines() if line.startswith(f"│ {' ' * 2}{n} │"))
                  for n in range(2))
    assert " ok " in row0 and f"{train['final_loss']:.4f}" in row0 and "eval accuracy" in row0
    assert "FAILED: node 0 exit 1" in row1
    assert [j["sweep_job"] for j in json.loads((sweep / "report" / "sweep.json").read_text())] == ["0", "1"]
    assert all(RunDir(sweep / str(n)).run_report.exists() for n in range(2))
    assert f"wrote the sweep report {sweep / 'report' / 'sweep.json'}" in res.stdout
    assert f"hpc-ft report {sweep}" in res.stdout


def test_wait_false_returns_at_once_and_a_driver_finishes_the_sweep(tmp_path):
    sweep = tmp_path / "sw"
    # Through pipes: they close when hpc-ft exits, not when the detached driver does.
    res = subprocess.run([*CLI, "submit", "-m", "optim.lr=1e-3,3e-3", "sched.array_parallelism=1", "wait=false",
                          *TINY, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"hpc-ft report {sweep}" in res.stdout
    # One at a time, so the second job cannot have ended when hpc-ft returned.
    assert not (sweep / "1" / "results.json").exists()
    manifest = sweep / "manifest.json"
    wait_until(lambda: json.loads(manifest.read_text())["state"] == "finished", 300, "the sweep driver")
    jobs = json.loads(manifest.read_text())["jobs"]
    assert all(j["job_id"] for j in jobs)
    for n in range(2):
        run = sweep / str(n)
        assert NodeReport.load(RunDir(run).node(0).report).ok
        assert json.loads((run / "results.json").read_text())[0]["exit_code"] == 0
