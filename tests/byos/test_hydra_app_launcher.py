"""hydra/launcher=hpc_ft in any Hydra application: Hydra's own launcher test suites, for the local executor.

As Hydra's own launcher plugins use them (hydra_submitit_launcher's tests): ``LauncherTestSuite`` runs sweeps
of Hydra's test apps through the launcher in this process; ``IntegrationTestSuite`` writes apps to files and
runs them as ``python app.py -m hydra/launcher=hpc_ft ...``. Each job is a real submitit local job.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

from hydra_plugins.hpc_ft_launcher.launcher import HpcFtLauncher

pytestmark = pytest.mark.slow

LOCAL = ["hydra.launcher.executor=local", "hydra.launcher.timeout_min=5", "hydra.launcher.telemetry=false",
         "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def test_discovery():
    assert HpcFtLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("hpc_ft", LOCAL)])
class TestHpcFtLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    ({}, ["-m", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled", "hydra/launcher=hpc_ft", *LOCAL]),
])
class TestHpcFtLauncherIntegration(IntegrationTestSuite):
    pass


APP = '''
import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    if cfg.get("fail"):
        raise ValueError("lr too large (on purpose)")
    return float(cfg.lr) * 10


if __name__ == "__main__":
    main()
'''


def _app(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    app = tmp_path / "my_app.py"
    app.write_text(APP)
    return subprocess.run([sys.executable, str(app), "-m", "hydra/launcher=hpc_ft", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)


def test_a_plain_apps_sweep_runs_with_telemetry_and_reports(tmp_path, run_cli):
    sweep = tmp_path / "sweep"
    res = _app(tmp_path, "+lr=0.1,0.2", "hydra.launcher.telemetry_interval_s=0.2", "hydra.launcher.cpus_per_task=1",
               f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stdout + res.stderr
    for n in (0, 1):
        node = json.loads((sweep / str(n) / "nodes" / "node0" / "node_report.json").read_text())
        assert node["exit_code"] == 0 and node["telemetry"], node  # the sampler ran beside the task function
    assert "sweep plan: 2 jobs" in (sweep / "plan.txt").read_text()
    rep = run_cli("report", str(sweep), timeout_s=120)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    # The advice is the launcher's, and the next command is the app's own, with this job's overrides.
    job0 = json.loads((sweep / "0" / "report" / "report.json").read_text())
    assert job0["advice"] and all(a["key"].startswith("hydra.launcher.") for a in job0["advice"]), job0["advice"]
    app = shlex.quote(str(tmp_path / "my_app.py"))
    assert job0["command"].startswith(f"python {app} -m +lr=0.1 hydra/launcher=hpc_ft "), job0["command"]
    assert "hydra.launcher.cpus_per_task=1" in job0["command"] and "hydra.sweep.dir" not in job0["command"]
    logs = run_cli("logs", str(sweep / "0"), timeout_s=60)  # the task log lies in the sweep's array folder
    assert logs.returncode == 0 and "_0_log.out <==" in logs.stdout, logs.stdout + logs.stderr
    again = run_cli("submit", "--from", str(sweep / "0"), timeout_s=60)
    assert again.returncode == 2 and "is a job of your own Hydra app" in again.stderr, again.stderr


def test_a_bad_launcher_value_is_refused_naming_its_key(tmp_path):
    res = _app(tmp_path, "+lr=0.1", "hydra.launcher.nodes=0", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "hydra.launcher.nodes=0: must be at least 1" in res.stderr
    assert "Fix: pass hydra.launcher.nodes=1" in res.stderr  # the fix in the launcher's own keys too
    assert "Traceback" not in res.stderr and not (tmp_path / "sweep" / "0").exists()


@pytest.mark.parametrize("override, shown", [
    ("hydra.launcher.executor=nosuch", "hydra.launcher.executor='nosuch': must be one of local, debug, slurm. "
                                       "Fix: pass hydra.launcher.executor=local"),
    ("hydra.launcher.gpus_per_node=-1", "hydra.launcher.gpus_per_node=-1: must be 0 (CPU) or more. "
                                        "Fix: pass hydra.launcher.gpus_per_node=0"),
    ("hydra.launcher.timeout_min=0", "hydra.launcher.timeout_min=0: must be at least 1 minute. "
                                     "Fix: pass hydra.launcher.timeout_min="),
])
def test_a_bad_launcher_value_exits_2_with_one_error_and_submits_nothing(tmp_path, override, shown):
    """As hpc-ft refuses bad input: one error (key, value, rule, fix), exit status 2 (Hydra's own would be 1),
    no traceback and no HYDRA_FULL_ERROR hint, and nothing written: not even the sweep dir Hydra's sweeper made."""
    sweep = tmp_path / "sweep"
    res = _app(tmp_path, "+lr=0.1,0.2", override, f"hydra.sweep.dir={sweep}")
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.count("error: invalid job configuration (1 problem(s)):") == 1 and shown in res.stderr
    assert "Traceback" not in res.stderr and "HYDRA_FULL_ERROR" not in res.stderr, res.stderr
    assert not sweep.exists()


def test_a_failing_job_fails_the_sweep_with_its_error(tmp_path):
    res = _app(tmp_path, "+lr=0.1", "+fail=true", "hydra.launcher.telemetry=false",
               f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert res.returncode == 1 and "lr too large (on purpose)" in res.stderr
    node = json.loads((tmp_path / "sweep" / "0" / "nodes" / "node0" / "node_report.json").read_text())
    assert node["exit_code"] == 1 and "lr too large" in node["error_tail"]


TIMED_APP = '''
import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

HOLD_S = 3.0


def running(rec: Path) -> int:
    return sum(1 for s in rec.glob("*.start") if not s.with_suffix(".end").exists())


@hydra.main(version_base=None, config_path=None, config_name=None)
def main(cfg: DictConfig) -> float:
    """Records its own start and end; holds HOLD_S seconds as its work, ending at once when more than two jobs
    run together (the bound is broken: no need to wait for the rest)."""
    rec, me = Path(cfg.rec), str(cfg.lr)
    (rec / f"{me}.start.tmp").write_text(repr(time.time()))
    os.replace(rec / f"{me}.start.tmp", rec / f"{me}.start")
    t0 = time.monotonic()
    while time.monotonic() - t0 < HOLD_S and running(rec) <= 2:
        time.sleep(0.05)
    (rec / f"{me}.end.tmp").write_text(repr(time.time()))
    os.replace(rec / f"{me}.end.tmp", rec / f"{me}.end")
    return float(cfg.lr)


if __name__ == "__main__":
    main()
'''


def test_a_local_sweep_runs_at_most_the_plans_parallelism_at_once(tmp_path):
    """4 jobs within a budget of 2 (a CPU job counts a node): the plan says 2 at once, and the local executor
    keeps to it (submitit's local batch alone starts all 4). Measured from the jobs' own start and end times."""
    app, rec, sweep = tmp_path / "timed_app.py", tmp_path / "rec", tmp_path / "sweep"
    app.write_text(TIMED_APP)
    rec.mkdir()
    res = subprocess.run([sys.executable, str(app), "-m", "hydra/launcher=hpc_ft", "+lr=1,2,3,4", f"+rec={rec}",
                          "hydra.launcher.budget_gpus=2", *LOCAL, f"hydra.sweep.dir={sweep}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "at most 2 at once" in res.stdout + res.stderr, res.stdout + res.stderr
    spans = [(float((rec / f"{lr}.start").read_text()), float((rec / f"{lr}.end").read_text()))
             for lr in ("1", "2", "3", "4")]
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
    at_once, most = 0, 0
    for _, d in events:
        at_once += d
        most = max(most, at_once)
    assert most == 2, spans  # never more than the plan's 2, and 2 did run together
