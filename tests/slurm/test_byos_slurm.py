"""A user's own script and a plain Hydra app's sweep on the real local Slurm (scripts/local-slurm.sh)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from omegaconf import DictConfig

from hpc_ft.rundir.layout import RunDir
from tests.conftest import wait_until
from tests.slurm.conftest import wait_job_done

pytestmark = pytest.mark.slurm

SCRIPTS = Path(__file__).resolve().parents[1] / "byos" / "scripts"
SLURM = ["executor=slurm", "resources.mem_gb=1", "resources.timeout_min=10", "executor.poll_interval_s=0.5",
         "resources.workers_per_node=1", "executor.preempt_signal_delay_s=60"]


def test_a_plain_script_on_two_nodes_is_preempted_requeued_and_resumes_from_its_checkpoint(slurm_cluster, run_cli,
                                                                                          tmp_path):
    """The script imports nothing of hpc_ft and has no signal handler: the forwarded USR2 ends it, the node task
    requeues the job into the same run dir, and the script resumes from its own checkpoint (step 4)."""
    run = tmp_path / "run"
    res = run_cli("submit", f"script.path={SCRIPTS / 'plain_ddp.py'}", "script.args=[--steps,8,--hold-at,4]",
                  *SLURM, "resources.nodes=2", "wait=false", f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    job_id = re.search(r"submitted job (\S+)", res.stdout).group(1)
    try:
        wait_until((run / "hold_at_4").exists, 240, "the script to hold at step 4")
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)
        assert wait_job_done(job_id, 400) == ["REQUEUED", "COMPLETED"]
    finally:
        subprocess.run(["scancel", job_id], timeout=30)
    assert json.loads((run / "final.json").read_text()) == {"step": 8, "world_size": 2, "resumed_from": 4}
    reports = [json.loads(RunDir(run).node(r).report.read_text()) for r in (0, 1)]
    assert [r["exit_code"] for r in reports] == [0, 0] and {r["host"] for r in reports} == {"node01", "node02"}
    argv = json.loads(RunDir(run).node(1).torchrun_argv.read_text())
    assert argv[-5:] == [str(SCRIPTS / "plain_ddp.py"), "--steps", "8", "--hold-at", "4"]


def test_a_plain_hydra_apps_sweep_is_one_slurm_job_array_returning_every_value(slurm_cluster, hydra_sweep_runner,
                                                                            tmp_path):
    def task(cfg: DictConfig):
        from hydra.core.hydra_config import HydraConfig

        return {"value": cfg.a * 10, "job_id": str(HydraConfig.get().job.id)}

    sweep = hydra_sweep_runner(
        calling_file=None, calling_module="hydra.test_utils.a_module", task_function=task,
        config_path="configs", config_name="compose",
        overrides=["hydra/launcher=hpc_ft", "hydra.launcher.executor=slurm", "hydra.launcher.mem_gb=1",
                   "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5", "+a=1,2,3"],
        temp_dir=tmp_path)
    with sweep:  # Hydra's sweep runner removes its temp dir on exit: read the job dirs inside
        rets = sweep.returns[0]
        for n in range(3):  # the sampler ran beside each task function
            assert json.loads((tmp_path / str(n) / "nodes" / "node0" / "node_report.json").read_text())["telemetry"]
    assert [r.return_value["value"] for r in rets] == [10, 20, 30]
    ids = [r.return_value["job_id"] for r in rets]
    array = {i.split("_")[0] for i in ids}
    assert len(array) == 1 and sorted(i.split("_")[1] for i in ids) == ["0", "1", "2"]  # one array, 3 tasks
    # The results arrive before the tasks' steps end: wait for Slurm's final state of each array task.
    assert [wait_job_done(i, 120) for i in sorted(ids)] == [["COMPLETED"]] * 3


def test_a_preempted_hydra_app_job_is_requeued_and_returns_from_its_second_run(slurm_cluster, hydra_sweep_runner,
                                                                              tmp_path):
    """submitit's checkpointing through the launcher: USR2 requeues the job, the task function runs again."""
    import threading

    marker = tmp_path / "first_run_job_id"

    def task(cfg: DictConfig):
        import time

        from hydra.core.hydra_config import HydraConfig

        if not marker.exists():  # the first run waits (bounded) to be preempted
            marker.write_text(str(HydraConfig.get().job.id))
            time.sleep(300)
            return "not preempted"
        return "second run"

    def preempt() -> None:
        job_id = wait_until(lambda: marker.exists() and marker.read_text(), 240, "the first run to start")
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=30)

    signaller = threading.Thread(target=preempt, daemon=True)
    signaller.start()
    sweep = hydra_sweep_runner(
        calling_file=None, calling_module="hydra.test_utils.a_module", task_function=task,
        config_path="configs", config_name="compose",
        overrides=["hydra/launcher=hpc_ft", "hydra.launcher.executor=slurm", "hydra.launcher.mem_gb=1",
                   "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=10",
                   "hydra.launcher.preempt_signal_delay_s=60", "hydra.launcher.telemetry=false", "+a=1"],
        temp_dir=tmp_path / "sweep")
    with sweep:
        (ret,) = sweep.returns[0]
    signaller.join(timeout=10)
    assert ret.return_value == "second run"
    job_id = marker.read_text()
    assert wait_job_done(job_id, 120) == ["REQUEUED", "COMPLETED"]
