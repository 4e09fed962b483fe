"""Jobs sharing a host: two 2-node jobs at once, each its own rendezvous (issue 10.1).

With the old port rule (``10000 + job_id % 20000``) job ids 1234567 and 1254567 both got port 24567: the
second job's agents joined the first job's c10d store and died with it (RendezvousConnectionError).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SYNTH, kill_job_processes, wait_until
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.spec import spec_path, write_spec

pytestmark = pytest.mark.slow

HOLD_AT = 2


def _spec(run_dir: Path, *extra: str) -> Path:
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve

    conf = compose_conf([*SYNTH, "resources.nodes=2", "resources.workers_per_node=1", "resources.cpus_per_task=1",
                         "executor.max_requeues=0", *extra], run_dir=run_dir)
    conf.executor.env = {"HPC_FT_TEST_HOLD_AT_STEP": str(HOLD_AT)}
    spec = resolve(conf)
    write_spec(spec)
    return spec_path(spec)


def _start_job(run_dir: Path, job_id: str) -> list[subprocess.Popen]:
    """Both nodes of a Slurm job, as its sbatch script starts them: `python -m hpc_ft.node.entry`, SLURM_* set."""
    spec_path = _spec(run_dir)
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "SLURM_JOB_ID": job_id, "SLURM_NODEID": str(rank), "SLURM_JOB_NUM_NODES": "2",
               "SLURM_JOB_NODELIST": "localhost,localhost", "SLURM_RESTART_COUNT": "0"}
        log = open(run_dir / f"entry{rank}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "hpc_ft.node.entry", str(spec_path)], env=env,
                                      stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        log.close()
    return procs


def _held(run_dir: Path) -> bool:
    return all((run_dir / "nodes" / f"node{r}" / "held_at_step").exists() for r in (0, 1))


def _endpoint(run_dir: Path, rank: int) -> str:
    argv = json.loads((run_dir / "nodes" / f"node{rank}" / "torchrun_argv.json").read_text())
    return next(a for a in argv if a.startswith("--rdzv-endpoint="))


def _release(procs: list[subprocess.Popen]) -> list[int]:
    for p in procs:
        p.send_signal(signal.SIGUSR2)  # the preemption signal: training checkpoints at the held step and stops
    return [p.wait(timeout=180) for p in procs]


def _torchrun_logs(run_dir: Path) -> str:
    return "".join((run_dir / "nodes" / f"node{r}" / "torchrun.log").read_text() for r in (0, 1))


def test_two_two_node_jobs_on_one_host_do_not_share_a_rendezvous(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    procs = []
    try:
        procs += _start_job(a, "1234567")
        wait_until(lambda: _held(a), 240, "job 1234567 to train (both nodes)")
        procs += _start_job(b, "1254567")
        wait_until(lambda: _held(b), 240, "job 1254567 to train (both nodes)")
        # Each job's nodes agree on one endpoint; the two jobs' endpoints differ.
        assert _endpoint(a, 0) == _endpoint(a, 1) and _endpoint(b, 0) == _endpoint(b, 1)
        assert _endpoint(a, 0) != _endpoint(b, 0)
        # The first job ends while the second is still training: the second must not notice.
        assert _release(procs[:2]) == [75, 75]  # preempted, no requeues left (executor.max_requeues=0)
        assert _release(procs[2:]) == [75, 75]
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    for run in (a, b):
        for r in (0, 1):
            node = json.loads(RunDir(run).node(r).report.read_text())
            assert node["train"]["preempted"] and node["train"]["steps"] == HOLD_AT, (run, node)
            assert node["train"]["world_size"] == 2
        assert "RendezvousConnectionError" not in _torchrun_logs(run)


def test_two_two_node_jobs_on_the_local_executor_at_once(tmp_path, synth):
    from tests.conftest import job_processes

    exe = Path(sys.executable).with_name("hpc-ft")
    runs = [tmp_path / "a", tmp_path / "b"]
    procs = [subprocess.Popen([str(exe), "submit", *synth, "resources.nodes=2", "resources.workers_per_node=1",
                               "resources.cpus_per_task=1", f"+executor.env.HPC_FT_TEST_HOLD_AT_STEP={HOLD_AT}",
                               f"hydra.run.dir={run}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              stdin=subprocess.DEVNULL) for run in runs]
    try:
        for run in runs:  # both jobs train at the same time
            wait_until(lambda: _held(run), 240, f"both nodes of {run.name} to train")
        assert _endpoint(runs[0], 0) == _endpoint(runs[0], 1) and _endpoint(runs[1], 0) == _endpoint(runs[1], 1)
        assert _endpoint(runs[0], 0) != _endpoint(runs[1], 0)
        for run, proc in zip(runs, procs):  # one after the other: the first ends while the second trains
            agents = [pid for pid, (argv, _) in job_processes(run / "job.yaml").items()
                      if "torch.distributed.run" in argv]
            assert len(agents) == 2
            for pid in agents:
                os.kill(pid, signal.SIGUSR2)
            out = proc.communicate(timeout=180)[0]
            assert proc.returncode == 75, out  # preempted at the held step, resumable
    finally:
        for proc in procs:
            proc.kill()
        for run in runs:
            kill_job_processes(run / "job.yaml")
    for run in runs:
        nodes = json.loads((run / "results.json").read_text())
        assert [n["train"]["steps"] for n in nodes] == [HOLD_AT, HOLD_AT]
        assert all(n["train"]["preempted"] and n["train"]["world_size"] == 2 for n in nodes)
        assert "RendezvousConnectionError" not in _torchrun_logs(run)
