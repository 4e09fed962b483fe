"""executor.max_restarts: torchrun restarts a killed worker, and training resumes from the newest checkpoint."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import job_processes, torchrun_agent, wait_until
from hpc_ft.rundir.spec import spec_path

pytestmark = pytest.mark.slow

HOLD_AT = 8  # checkpoints every 5 steps: the newest one while held is step 5


def _worker(spec_path: Path, local_rank: str) -> int | None:
    for pid, (argv, env) in job_processes(spec_path).items():
        if "torch.distributed.run" not in argv and "hpc_ft.train" in argv and env.get("LOCAL_RANK") == local_rank:
            return pid
    return None


def test_killed_worker_is_restarted_from_the_newest_checkpoint(tmp_path, synth):
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.job import resolve
    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather, wait

    conf = compose_conf([*synth, "executor=local", "executor.max_restarts=1"], run_dir=tmp_path / "run")
    conf.executor.env = {"HPC_FT_TEST_HOLD_AT_STEP": str(HOLD_AT)}
    spec = resolve(conf)
    held = spec.run_dir / "nodes" / "node0" / "held_at_step"
    job = submit(spec)
    try:
        wait_until(held.exists, 180, "training to hold")
        victim = wait_until(lambda: _worker(spec_path(spec), "1"), 30, "worker 1")
        held.unlink()
        os.kill(victim, signal.SIGKILL)
        # Restarted workers resume from step 5 and hold at step 8 again: proof of restart and resume.
        wait_until(held.exists, 180, "the restarted workers to hold")
        assert _worker(spec_path(spec), "1") not in (None, victim)
        # End the run through the preemption path (checkpoint at step 8) so it doesn't wait for the hold timeout.
        os.kill(wait_until(lambda: torchrun_agent(spec_path(spec)), 30, "torchrun"), signal.SIGUSR2)
        wait(job, poll_s=0.5, timeout_s=180)
    finally:
        if not job.done():
            job.cancel()
    (rep,) = gather(job, spec)
    assert rep.train.start_step == 5, rep.train  # the restarted workers began at the newest checkpoint
    assert rep.train.preempted and rep.train.steps == HOLD_AT
    log = (spec.run_dir / "nodes" / "node0" / "torchrun.log").read_text()
    assert "restart" in log.lower(), log[-2000:]
    assert json.loads((spec.run_dir / "nodes" / "node0" / "torchrun_argv.json").read_text()).count(
        "--max-restarts=1") == 1
