"""A run the user cancelled (`hpc-ft cancel`) reads CANCELLED: the state decision and the run dir's cancel record."""

from __future__ import annotations

import json
import shutil
import socket
from dataclasses import asdict
from pathlib import Path

import pytest

from hpc_ft.commands import runstate
from hpc_ft.commands.cancel import record_cancel
from hpc_ft.commands.runstate import (CANCELLED, COMPLETED, FAILED, PREEMPTED, UNKNOWN, RunState, ended_state,
                                      run_state)
from hpc_ft.rundir.atomic import atomic_write_text
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.lock import PROCESS, SLURM_JOB, LockOwner, RunDirLock, _pid_start_ticks
from hpc_ft.rundir.records import CancelRecord, NodeReport, TrainResult

OLD_RUN = Path(__file__).resolve().parents[1] / "report" / "data" / "run_e5bbae0"  # 2 nodes, preempted at step 2
SCRIPT_JOB = """\
conf:
  run: {name: plaincancel}
  executor: {name: local}
  resources: {nodes: 1, gpus_per_node: 0}
  train: {max_steps: 200, global_batch_size: 32}
  script: {path: /work/trial/scratch/plain_ddp.py}
overrides: []
"""
GONE_PID = "4194303"  # the owner's start ticks (1) are no live process's: the job has ended


def _report(code: int, train: TrainResult | None = None, preempted: bool = False) -> NodeReport:
    return NodeReport(host="vm", node_rank=0, job_id=GONE_PID, exit_code=code, wall_s=1.0, train=train,
                      preempted=preempted)


FAILED_SCRIPT = _report(1)  # a plain script died of the SIGTERM: torchrun's exit 1
CHECKPOINTED = _report(75, TrainResult(steps=5, preempted=True), preempted=True)  # hpc_ft's loop: resumable
DONE = _report(0, TrainResult(steps=20, max_steps=20))


@pytest.mark.parametrize("state, reports, cancelled, expected", [
    (UNKNOWN, [FAILED_SCRIPT], True, CANCELLED),  # a cancelled plain script: not FAILED
    (UNKNOWN, [CHECKPOINTED], True, CANCELLED),  # hpc_ft's loop checkpointed on the cancel: not PREEMPTED
    (UNKNOWN, [], True, CANCELLED),  # cancelled while pending; Slurm cannot be asked
    ("PREEMPTED", [CHECKPOINTED], True, CANCELLED),  # whatever Slurm's last word
    (UNKNOWN, [DONE], True, COMPLETED),  # the cancel came as the job finished
    (UNKNOWN, [FAILED_SCRIPT], False, FAILED),
    (UNKNOWN, [CHECKPOINTED], False, PREEMPTED),
    (CANCELLED, [CHECKPOINTED], False, CANCELLED),  # Slurm's own CANCELLED stays
    (UNKNOWN, [], False, UNKNOWN),
])
def test_the_state_of_an_ended_run(state, reports, cancelled, expected):
    assert ended_state(state, reports, cancelled) == expected


def _script_run(tmp_path: Path) -> RunDir:
    """A plain script's run dir as `hpc-ft cancel` left it: its local job gone, node 0 failed (exit 1)."""
    rd = RunDir(tmp_path / "plaincancel")
    rd.path.mkdir()
    rd.spec.write_text(SCRIPT_JOB)
    owner = LockOwner(pid=1, host=socket.gethostname(), executor="local", started_unix_s=1000.0, liveness=PROCESS,
                      job_id=GONE_PID, detached=True, job_pid_start_ticks=1)
    atomic_write_text(RunDirLock(rd.path).owner_path, json.dumps(asdict(owner)))
    rd.node(0).path.mkdir(parents=True)
    FAILED_SCRIPT.save(rd.node(0).report)
    return rd


def _recorded(rd: RunDir, job_id: str = GONE_PID) -> None:
    """What `hpc-ft cancel` records before it signals job ``job_id`` of ``rd``."""
    record_cancel(RunState(rd.path, None, job_id=job_id))


def test_a_cancelled_script_run_is_cancelled_not_failed(tmp_path):
    rd = _script_run(tmp_path)
    assert run_state(rd.path).state == FAILED  # without the record: what it died of
    _recorded(rd)
    st = run_state(rd.path)
    assert st.state == CANCELLED and st.cancelled and [n.state for n in st.nodes] == ["cancelled (exit 1)"]


def test_a_record_of_another_job_or_submission_does_not_count(tmp_path):
    """A resubmission into the dir after a cancel is another job (another id), or, locally, the same pid reused by
    another submission (another owner start time)."""
    rd = _script_run(tmp_path)
    _recorded(rd, job_id="12")  # an earlier job of the dir
    assert run_state(rd.path).state == FAILED
    CancelRecord(job_id=GONE_PID, submitted_unix_s=999.0, cancelled_unix_s=1001.0).save(rd.cancel_record)
    assert run_state(rd.path).state == FAILED
    rd.cancel_record.write_text("{not json")
    assert run_state(rd.path).state == FAILED


def test_a_cancelled_slurm_job_reads_cancelled_while_slurm_is_down(tmp_path, monkeypatch):
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    monkeypatch.setattr(runstate, "slurm_jobs", lambda job_id: [])  # scontrol and sacct answer nothing
    monkeypatch.setattr(runstate, "job_probe", lambda *a: SLURM_JOB)
    assert run_state(run).state == PREEMPTED
    _recorded(RunDir(run), job_id="10136")
    st = run_state(run)
    assert st.state == CANCELLED and [n.state for n in st.nodes] == ["preempted", "preempted"]  # resumable nodes


@pytest.mark.parametrize("script", [True, False])
def test_cancel_promises_a_checkpoint_only_for_hpc_fts_loop(tmp_path, capsys, script):
    """A plain script dies of the SIGTERM: cancel does not say it checkpoints, nor that submitting resumes it."""
    import subprocess
    import sys

    from hpc_ft.commands.cancel import _cancel

    rd = _script_run(tmp_path)
    if not script:
        rd.spec.write_text(SCRIPT_JOB.replace("  script: {path: /work/trial/scratch/plain_ddp.py}\n", ""))
    # the job's stand-in, with a submitit local controller's command line (the only kind cancel signals)
    controller = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "-m", "submitit.local._local",
                                   str(tmp_path)])
    try:
        # cancel signals a pid only for the owner record of that local job on this host
        owner = LockOwner(pid=1, host=socket.gethostname(), executor="local", started_unix_s=1000.0,
                          liveness=PROCESS, job_id=str(controller.pid), detached=True,
                          job_pid_start_ticks=_pid_start_ticks(controller.pid))
        atomic_write_text(RunDirLock(rd.path).owner_path, json.dumps(asdict(owner)))
        st = RunState(rd.path, runstate.SpecView.load(rd.spec), job_id=str(controller.pid), probe=PROCESS,
                      state="RUNNING")
        assert _cancel([st], rd.path, grace_s=30.0) == 0
    finally:
        controller.kill()
        controller.wait(timeout=30)
    out = capsys.readouterr().out
    promised = ("checkpoint at the current step" in out, "continues from the newest checkpoint" in out)
    assert promised == ((False, False) if script else (True, True)), out
    assert CancelRecord.load(rd.cancel_record).job_id == str(controller.pid)
    if script:
        assert "sent to the script's workers" in out and "a checkpoint of its own" in out
