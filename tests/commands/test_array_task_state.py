"""hpc-ft status, list, logs and cancel on one run dir of a Slurm job array, from what the run dir records (trial 4,
problem 4); cancel never signals a local pid that the records do not tie to the local executor on this host; and
a search's trials in list: PRUNED, with the search's metric.

Slurm's commands are stand-ins on PATH (shell scripts logging their arguments); no cluster is needed."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from hpc_ft.commands import cancel as cancel_cmd
from hpc_ft.commands.list import list_main
from hpc_ft.commands.logs import logs_main
from hpc_ft.commands.runstate import PREEMPTED, PRUNED, RUNNING, RunState, SpecView, run_state
from hpc_ft.commands.status import status_main
from hpc_ft.rundir.atomic import atomic_write_text
from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.lock import NO_PROBE, PROCESS, SLURM_JOB, LockOwner, RunDirLock, _pid_start_ticks
from hpc_ft.rundir.records import ManifestJob, NodeAttempt, NodeReport, SweepManifest, TrainResult

JOB = """\
conf:
  run: {{name: t}}
  executor: {{name: {executor}}}
  resources: {{nodes: 1, gpus_per_node: 0}}
  train: {{max_steps: 20, global_batch_size: 32}}
  script: {{module: {module}, hydra_app: {app}}}
  tune: {{metric: {metric}}}
overrides: []
"""
T0 = 1_700_000_000.0  # when the jobs below started (records and file times)


def _job_dir(path: Path, executor: str = "slurm", *, module: str = "null", app: str = "null",
             metric: str = "eval_loss") -> RunDir:
    rd = RunDir(path)
    rd.path.mkdir(parents=True)
    rd.spec.write_text(JOB.format(executor=executor, module=module, app=app, metric=metric))
    os.utime(rd.spec, (T0, T0))
    return rd


def _report(rd: RunDir, job_id: str, code: int = 0, metrics: dict | None = None, preempted: bool = False,
            steps: int = 20) -> None:
    rd.node(0).path.mkdir(parents=True, exist_ok=True)
    train = TrainResult(steps=steps, max_steps=20, preempted=preempted, metrics=metrics or {})
    NodeReport(host="vm", node_rank=0, job_id=job_id, exit_code=code, wall_s=5.0, train=train,
               preempted=preempted).save(rd.node(0).report)


def _slurm_sweep(root: Path, ids: tuple[str, ...] = ("6_0", "6_1")) -> list[RunDir]:
    """A Slurm sweep of hpc_ft's own jobs as `hpc-ft submit -m executor=slurm` leaves it: the manifest names each
    job's array task; each job dir has job.yaml (and, once a node started, what it wrote)."""
    sweep = root / "multirun" / "2026-12-02" / "11-32-54"
    dirs = [_job_dir(sweep / str(n)) for n in range(len(ids))]
    jobs = [ManifestJob(num=n, run_dir=str(rd.path), overrides=[f"optim.lr=0.0{n + 1}"], order_index=n, nodes=1,
                        gpus_per_node=0, job_id=job_id) for n, (rd, job_id) in enumerate(zip(dirs, ids))]
    SweepManifest(executor="slurm", wait=False, state="submitted", plan={}, jobs=jobs).save(SweepDir(sweep).manifest)
    return dirs


def _slurm_commands(tmp_path: Path, monkeypatch, scontrol: str = "") -> Path:
    """Slurm's client commands on PATH (nothing else there): ``scontrol`` prints ``scontrol`` (exit 1 when empty:
    an unknown job), sacct and squeue print nothing, scancel succeeds; each logs its argv to ``calls``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    outs = {"scontrol": scontrol, "sacct": "", "squeue": "", "scancel": ""}
    for name, out in outs.items():
        code = 1 if name == "scontrol" and not out else 0
        (bin_dir / name).write_text(f"#!/bin/sh\necho {name} \"$*\" >> {shlex.quote(str(calls))}\n"
                                    f"printf '%s' {shlex.quote(out)}\nexit {code}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return calls


def _calls(calls: Path, name: str) -> list[str]:
    return [ln.split(" ", 1)[1] for ln in (calls.read_text().splitlines() if calls.exists() else [])
            if ln.startswith(name + " ")]


# --- status: an array task is Slurm's, under its array id ------------------------------------------------------

def test_status_of_a_job_dir_of_a_slurm_sweep_names_its_array_task(tmp_path, monkeypatch, capsys):
    """It said `job 7 (local process)`: the node's own job number, and no submitit script in the job dir."""
    rd = _slurm_sweep(tmp_path)[0]
    _report(rd, job_id="7", metrics={"eval_accuracy": 1.0})  # SLURM_JOB_ID of the task, as its node saw it
    NodeAttempt("7", 0, T0 + 1).save(rd.node(0).attempt)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # Slurm is down: the records alone
    st = run_state(rd.path)
    assert (st.job_id, st.probe, st.state) == ("6_0", SLURM_JOB, "COMPLETED")
    assert status_main([str(rd.path)]) == 0
    out = capsys.readouterr().out
    assert "job 6_0 (Slurm): COMPLETED" in out and "local process" not in out, out


def test_status_of_a_job_dir_of_a_hydra_apps_array_is_slurm_and_shows_no_step(tmp_path, monkeypatch, capsys):
    """Your own Hydra app's task on Slurm: `job 1_2 (local process): COMPLETED` and `step 0` before."""
    rd = _job_dir(tmp_path / "multirun" / "2", module="my_app", app="'python my_app.py'")
    rd.node(0).path.mkdir(parents=True)
    NodeReport(host="vm", node_rank=0, job_id="1_2", exit_code=0, wall_s=3.0).save(rd.node(0).report)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert status_main([str(rd.path)]) == 0
    out = capsys.readouterr().out
    assert "job 1_2 (Slurm): COMPLETED" in out and "step 0" not in out, out


def test_a_running_array_task_is_asked_of_slurm_by_its_array_id(tmp_path, monkeypatch, capsys):
    """Running: no node report yet, only the manifest names the job (status said `no job recorded`)."""
    rd = _slurm_sweep(tmp_path)[1]
    calls = _slurm_commands(tmp_path, monkeypatch,
                            "JobId=8 ArrayJobId=6 ArrayTaskId=1 JobState=RUNNING Reason=None Restarts=0\n")
    st = run_state(rd.path)
    assert (st.job_id, st.probe, st.state) == ("6_1", SLURM_JOB, RUNNING)
    assert _calls(calls, "scontrol") == ["-o show job 6_1"]


def test_a_task_known_by_its_own_number_is_shown_by_its_array_id(tmp_path, monkeypatch):
    """No manifest lists the dir (its node's report names SLURM_JOB_ID): Slurm's answer names the array task."""
    rd = _job_dir(tmp_path / "elsewhere" / "0")
    _report(rd, job_id="7", code=-1)
    _slurm_commands(tmp_path, monkeypatch, "JobId=7 ArrayJobId=6 ArrayTaskId=0 JobState=RUNNING Reason=None\n")
    assert (run_state(rd.path).job_id, run_state(rd.path).probe) == ("6_0", SLURM_JOB)


def test_list_asks_slurm_about_array_tasks_the_run_dirs_tell_no_end_of(tmp_path, monkeypatch, capsys):
    dirs = _slurm_sweep(tmp_path)
    calls = _slurm_commands(tmp_path, monkeypatch,
                            "JobId=7 ArrayJobId=6 ArrayTaskId=0 JobState=RUNNING Reason=None\n"
                            "JobId=6 ArrayJobId=6 ArrayTaskId=1 JobState=PENDING Reason=Resources\n")
    assert list_main([str(tmp_path / "multirun"), "--json"]) == 0
    states = {d["run_dir"]: (d["state"], d["job_id"]) for d in json.loads(capsys.readouterr().out)}
    assert states == {str(dirs[0].path): ("RUNNING", "6_0"), str(dirs[1].path): ("PENDING", "6_1")}
    assert _calls(calls, "scontrol") == ["-o show job 6"]  # one query for the array


def test_logs_of_an_array_task_finds_its_log_in_the_sweeps_array_folder(tmp_path, monkeypatch, capsys):
    """submitit names an array task's logs by its array id (6_0_0_log.out), not by the node's job number (7)."""
    rd = _slurm_sweep(tmp_path)[0]
    _report(rd, job_id="7")
    folder = SweepDir(rd.path.parent).array_submitit(0)
    folder.mkdir(parents=True)
    (folder / "6_0_0_log.out").write_text("the task's own output\n")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert logs_main([str(rd.path)]) == 0
    assert "the task's own output" in capsys.readouterr().out


# --- cancel: that array task alone, never a local pid -----------------------------------------------------------

def test_cancel_of_a_job_dir_of_a_slurm_array_scancels_that_task_alone(tmp_path, monkeypatch, capsys):
    rd = _slurm_sweep(tmp_path)[0]
    rd.node(0).path.mkdir(parents=True)
    NodeAttempt("7", 0, T0 + 1).save(rd.node(0).attempt)  # its node started: SLURM_JOB_ID is the task's own number
    calls = _slurm_commands(tmp_path, monkeypatch,
                            "JobId=7 ArrayJobId=6 ArrayTaskId=0 JobState=RUNNING Reason=None\n")
    monkeypatch.setattr(os, "kill", _no_signal)
    monkeypatch.setattr(os, "killpg", _no_signal)
    assert cancel_cmd.cancel_main([str(rd.path), "--yes"]) == 0
    assert "scancel 6_0" in capsys.readouterr().out
    assert _calls(calls, "scancel") == ["6_0"]  # not 6: the sweep's other task runs on


def test_cancel_of_a_slurm_sweep_dir_scancels_its_whole_array(tmp_path, monkeypatch):
    dirs = _slurm_sweep(tmp_path)
    calls = _slurm_commands(tmp_path, monkeypatch,
                            "JobId=7 ArrayJobId=6 ArrayTaskId=0 JobState=RUNNING Reason=None\n"
                            "JobId=6 ArrayJobId=6 ArrayTaskId=1 JobState=PENDING Reason=Resources\n")
    assert cancel_cmd.cancel_main([str(dirs[0].path.parent), "--yes"]) == 0
    assert _calls(calls, "scancel") == ["6"]


def _no_signal(*args):
    raise AssertionError(f"a local process was signalled: {args}")


@pytest.fixture
def bystander():
    """A local process that is no job's: whatever cancel does, it must live on."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait(timeout=30)


def _owner(rd: RunDir, job_id: str, executor: str = "local", host: str | None = None) -> None:
    owner = LockOwner(pid=1, host=host or socket.gethostname(), executor=executor, started_unix_s=T0,
                      liveness=PROCESS, job_id=job_id, detached=True, job_pid_start_ticks=_pid_start_ticks(int(job_id)))
    atomic_write_text(RunDirLock(rd.path).owner_path, json.dumps(asdict(owner)))


def test_a_slurm_job_whose_id_is_a_live_local_pid_is_not_signalled(tmp_path, monkeypatch, capsys, bystander):
    """job.yaml says Slurm, its node report names job BYSTANDER_PID, and an earlier local submission's owner record
    into the dir names that pid alive: the id was taken for the local controller and SIGTERMed."""
    rd = _job_dir(tmp_path / "run")
    _report(rd, job_id=str(bystander.pid), code=-1)
    _owner(rd, str(bystander.pid), executor="local")  # of another executor than job.yaml's
    _slurm_commands(tmp_path, monkeypatch)  # Slurm knows no such job
    st = run_state(rd.path)
    assert st.probe == SLURM_JOB and not st.live
    assert cancel_cmd.cancel_main([str(rd.path), "--yes"]) == 0
    assert "nothing to cancel" in capsys.readouterr().out
    assert bystander.poll() is None


@pytest.mark.parametrize("owner", [None, "other host", "slurm executor"])
def test_cancel_signals_a_pid_only_with_the_local_owner_record_of_this_host(tmp_path, owner, capsys, bystander):
    """A live local-process state whose run dir has no owner record naming that job on this host, of job.yaml's
    executor: refused (exit 1, nothing recorded), the process untouched."""
    rd = _job_dir(tmp_path / "run", executor="local")
    if owner == "other host":
        _owner(rd, str(bystander.pid), host="elsewhere")
    elif owner == "slurm executor":
        _owner(rd, str(bystander.pid), executor="slurm")
    st = RunState(rd.path, SpecView.load(rd.spec), job_id=str(bystander.pid), probe=PROCESS, state=RUNNING)
    assert cancel_cmd._cancel([st], rd.path, grace_s=5.0) == 1
    err = capsys.readouterr().err
    assert f"job {bystander.pid} of {rd.path} (local process) not cancelled" in err and "Fix:" in err, err
    assert bystander.poll() is None and not rd.cancel_record.exists()


def test_no_record_of_the_executor_is_no_local_process(tmp_path, monkeypatch):
    """A job id from a node report, with no job.yaml, owner or Slurm file to say whose: not taken for a pid."""
    rd = _job_dir(tmp_path / "run")
    rd.spec.write_text("not: [a job.yaml of hpc_ft]\n")
    _report(rd, job_id="4242", code=-1)
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert run_state(rd.path).probe == NO_PROBE


# --- a search's trials: PRUNED, and the search's metric ---------------------------------------------------------

def _trial(root: Path, n: int, metric: str = "eval_loss") -> RunDir:
    """Trial ``n`` of an `hpc-ft tune` search dir (its journal beside the trials), stopped at a checkpoint."""
    search = root / "search"
    search.mkdir(exist_ok=True)
    SweepDir(search).tune_journal.touch()
    rd = _job_dir(search / str(n), executor="local", metric=metric)
    _report(rd, job_id="4194303", code=75, preempted=True, steps=10,
            metrics={"eval_accuracy": 0.5, "eval_loss": 0.7})
    NodeAttempt("4194303", 0, T0 + 1).save(rd.node(0).attempt)
    return rd


def _stop_request(rd: RunDir, at: float) -> None:
    rd.stop_request.write_text("10\n")
    os.utime(rd.stop_request, (at, at))


def test_a_trial_the_search_pruned_is_pruned_with_the_searchs_metric(tmp_path, monkeypatch, capsys):
    """list said PREEMPTED and eval_accuracy=0.5 for a trial of a search on tune.metric=eval_loss."""
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    pruned, preempted = _trial(tmp_path, 0), _trial(tmp_path, 1)
    _stop_request(pruned, T0 + 60)  # the pruner stopped it while it ran
    assert list_main([str(tmp_path / "search")]) == 0
    rows = {ln.split()[-1]: ln.split()[:2] for ln in capsys.readouterr().out.splitlines()[1:]}
    assert rows == {str(pruned.path): [PRUNED, "eval_loss=0.7"], str(preempted.path): [PREEMPTED, "eval_loss=0.7"]}
    st = run_state(pruned.path)
    assert [n.state for n in st.nodes] == ["pruned"]


def test_a_stop_request_older_than_the_job_is_an_earlier_jobs(tmp_path, monkeypatch):
    """A pruned trial the user resumed, then preempted: its own stop was not the search's."""
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    rd = _trial(tmp_path, 0)
    _stop_request(rd, T0 - 60)
    assert run_state(rd.path).state == PREEMPTED


def test_a_running_trial_shows_its_newest_evaluation_of_the_searchs_metric(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    rd = _trial(tmp_path, 0, metric="eval_loss")
    rd.node(0).report.unlink()
    rd.metrics.write_text('{"step": 5, "loss": 1.0}\n{"step": 5, "eval": {"eval_loss": 0.9, "eval_accuracy": 0.4}}\n'
                          '{"step": 10, "eval": {"eval_loss": 0.6, "eval_accuracy": 0.6}}\n{"step": 11, "loss": 0.5}\n')
    assert run_state(rd.path).metric == ("eval_loss", 0.6)


def test_a_job_of_hydras_optuna_sweeper_shows_its_tune_metric(tmp_path, monkeypatch):
    """Hydra's Optuna sweeper through the hpc_ft launcher optimises tune.metric: the job's Hydra record names it."""
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    sweeper, plain = (_job_dir(tmp_path / name, executor="local") for name in ("optuna", "plain"))
    for rd in (sweeper, plain):
        _report(rd, job_id="4194303", metrics={"eval_accuracy": 1.0, "eval_loss": 0.0004})
    (sweeper.path / ".hydra").mkdir()
    sweeper.hydra_record.write_text("hydra:\n  sweeper:\n    sampler:\n      _target_: optuna.samplers.TPESampler\n"
                                    "    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper\n")
    assert run_state(sweeper.path).metric == ("eval_loss", 0.0004)
    assert run_state(plain.path).metric == ("eval_accuracy", 1.0)  # tune.metric is only the default there
