"""hpc-ft cancel's resume command, hpc-ft list's columns and --sort metric, NOT SUBMITTED for an sbatch script no
job of which has started, and status walking outputs/ once."""

from __future__ import annotations

import json
import os
import shlex
import shutil
from pathlib import Path

import pytest

from hpc_ft.commands import cancel as cancel_cmd
from hpc_ft.commands.list import list_main
from hpc_ft.commands.runstate import NOT_SUBMITTED, UNKNOWN, RunState, SpecView, run_state
from hpc_ft.commands.status import status_main
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.lock import SLURM_JOB
from hpc_ft.rundir.records import NodeReport, TrainResult

JOB = """\
conf:
  run: {{name: t}}
  executor: {{name: {executor}}}
  resources: {{nodes: 1, gpus_per_node: 0}}
  train: {{max_steps: 10, global_batch_size: 32}}
  script: {{hydra_app: {app}}}
overrides: [train.max_steps=10]
"""


def _run(path: Path, metric: tuple[str, float] | None = None, executor: str = "local", app: str = "null") -> Path:
    """A run dir: job.yaml, and with ``metric`` node 0's report of a completed job."""
    rd = RunDir(path)
    rd.path.mkdir(parents=True)
    rd.spec.write_text(JOB.format(executor=executor, app=app))
    if metric is not None:
        rd.node(0).path.mkdir(parents=True)
        NodeReport(host="vm", node_rank=0, job_id="4194303", exit_code=0, wall_s=60.0,
                   train=TrainResult(steps=10, max_steps=10, metrics={metric[0]: metric[1]})).save(rd.node(0).report)
    return rd.path


# --- cancel: the command that resumes ---------------------------------------------------------------------------

def _cancelled(monkeypatch, capsys, states: list[RunState], whole_arrays: bool = False) -> list[str]:
    """What `hpc-ft cancel` prints after cancelling ``states`` (Slurm jobs; scancel stood in for)."""
    monkeypatch.setattr(cancel_cmd, "cancel_slurm", lambda ids: f"scancel {' '.join(ids)}")
    assert cancel_cmd._cancel(states, states[0].run_dir, grace_s=1.0, whole_arrays=whole_arrays) == 0
    return capsys.readouterr().out.splitlines()


def _live(path: Path, job_id: str = "77") -> RunState:
    return RunState(path, SpecView.load(RunDir(path).spec), job_id=job_id, probe=SLURM_JOB, state="RUNNING")


def test_cancel_prints_the_real_command_that_resumes_the_run_in_its_dir(tmp_path, monkeypatch, capsys):
    """It printed `hpc-ft submit ... hydra.run.dir=DIR`, a template. Now a command to paste, from any directory."""
    monkeypatch.chdir(tmp_path)
    run = _run(Path("outputs") / "my run")  # relative, with a space
    out = _cancelled(monkeypatch, capsys, [_live(run)])
    assert "continues from the newest checkpoint" in out[-2], out
    assert shlex.split(out[-1]) == ["hpc-ft", "submit", "--from", str(tmp_path / run),
                                    f"hydra.run.dir=\"{tmp_path / run}\""]  # Hydra's quotes: the space is literal
    assert "..." not in "\n".join(out)


def test_the_printed_command_submits_the_runs_own_overrides_into_the_same_dir(tmp_path, monkeypatch, capsys):
    """`hpc-ft submit --from` alone makes a new run dir; with the hydra.run.dir after it, the job resumes in its own:
    the argv `hpc-ft submit` composes is the run's recorded overrides plus that run dir."""
    from hpc_ft.commands.resubmit import expand
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.rundir.spec import save_spec
    from hpc_ft.submit.executors import resolve

    run = tmp_path / "run"
    recorded = ["model=mlp", "data=synthetic", "train.max_steps=7", "optim.lr=0.02", "wait=false"]
    save_spec(resolve(compose_conf(recorded, run_dir=run), recorded))
    out = _cancelled(monkeypatch, capsys, [_live(run)])
    argv = shlex.split(out[-1])
    assert argv[:2] == ["hpc-ft", "submit"]
    composed, notes = expand(argv[2:])
    assert composed == [*recorded, f"hydra.run.dir={run}"] and notes == []


def test_cancel_of_a_sweep_prints_one_command_per_job(tmp_path, monkeypatch, capsys):
    runs = [_run(tmp_path / "sweep" / str(n)) for n in (0, 1)]
    pending = RunState(tmp_path / "sweep" / "2", None, job_id="9_2", probe=SLURM_JOB, state="PENDING")  # no run dir yet
    out = _cancelled(monkeypatch, capsys, [_live(runs[0], "9_0"), _live(runs[1], "9_1"), pending], whole_arrays=True)
    assert out[0] == "scancel 9" and out[1].startswith("the run dirs are kept; to resume"), out
    assert [shlex.split(ln)[3] for ln in out[2:]] == [str(r) for r in runs]


def test_cancel_of_a_hydra_apps_job_names_no_hpc_ft_submit(tmp_path, monkeypatch, capsys):
    """hpc-ft submit --from refuses a job of the user's own Hydra app: cancel does not offer it."""
    run = _run(tmp_path / "app" / "0", app="'python my_app.py'")
    out = _cancelled(monkeypatch, capsys, [_live(run)])
    assert "hpc-ft submit" not in "\n".join(out) and "python my_app.py" in out[-1], out


# --- list: columns and --sort metric ------------------------------------------------------------------------------

def test_list_columns_stay_aligned_with_a_long_metric_and_state(tmp_path, monkeypatch, capsys):
    """A metric longer than its column (eval_token_accuracy=0.1235) pushed the columns after it to the right."""
    runs = [_run(tmp_path / "runs" / "a", ("eval_accuracy", 0.5)),
            _run(tmp_path / "runs" / "b", ("eval_token_accuracy", 0.123456)), _sbatch_run(tmp_path / "runs" / "c")]
    _fake_squeue(tmp_path, monkeypatch)  # c: NOT SUBMITTED, a state with a space
    assert list_main([str(tmp_path / "runs"), "--sort", "metric"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0], lines[1:]
    shown = "\n".join(lines)
    assert len(rows) == 3 and "NOT SUBMITTED" in rows[2] and "eval_token_accuracy=0.1235" in rows[1], shown
    # left-aligned columns start where their header does, right-aligned ones end where it ends
    assert [ln.index(str(r)) for ln, r in zip(rows, runs)] == [header.index("run dir")] * 3, shown
    assert [ln.index(m) for ln, m in zip(rows, ("eval_", "eval_", "-"))] == [header.index("metric")] * 3, shown
    steps_end = header.index("steps") + len("steps")
    assert [ln[:steps_end].split()[-1] for ln in rows] == ["10/10", "10/10", "-/10"], shown
    assert header.index("steps") > header.index("metric") + len("eval_token_accuracy=0.1235"), shown


def test_list_sort_metric_compares_runs_of_the_same_metric_only(tmp_path, capsys):
    """--sort metric sorted every value largest first: an accuracy of 0.5 between losses of 0.7 and 0.2. Now each
    metric's runs are together, best first: an accuracy largest first, a loss or perplexity smallest first."""
    runs = {name: _run(tmp_path / name, metric) for name, metric in (
        ("acc5", ("eval_accuracy", 0.5)), ("loss7", ("eval_loss", 0.7)), ("acc9", ("eval_accuracy", 0.9)),
        ("ppl3", ("eval_perplexity", 3.0)), ("loss2", ("eval_loss", 0.2)), ("ppl9", ("eval_perplexity", 9.0)),
        ("none", None), ("nan", ("eval_loss", float("nan"))))}
    assert list_main([str(tmp_path), "--sort", "metric", "--json"]) == 0
    order = [Path(d["run_dir"]).name for d in json.loads(capsys.readouterr().out)]
    assert order == ["acc9", "acc5", "loss2", "loss7", "nan", "ppl3", "ppl9", "none"]
    assert runs  # every run listed (the order above names each)


# --- NOT SUBMITTED: an hpc-ft sbatch script no job of which has started --------------------------------------------

def _fake_squeue(tmp_path: Path, monkeypatch, out: str = "", code: int = 0) -> Path:
    """A squeue on PATH (the only command there) that prints ``out`` and exits ``code``; returns its call log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "squeue.calls"
    (bin_dir / "squeue").write_text(f"#!/bin/sh\necho \"$*\" >> {shlex.quote(str(log))}\n"
                                    f"printf '%s' {shlex.quote(out)}\nexit {code}\n")
    (bin_dir / "squeue").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return log


def _sbatch_run(path: Path) -> Path:
    """What `hpc-ft sbatch` leaves in a run dir: job.yaml and the batch script, nothing of a job."""
    run = _run(path, executor="slurm")
    RunDir(run).sbatch_script.write_text("#!/bin/bash\n")
    return run


def test_an_sbatch_script_never_submitted_is_not_submitted_not_unknown(tmp_path, monkeypatch, capsys):
    run = _sbatch_run(tmp_path / "runs" / "s")
    log = _fake_squeue(tmp_path, monkeypatch)  # Slurm has no job of it
    assert run_state(run).state == NOT_SUBMITTED
    assert status_main([str(run)]) == 0
    text = capsys.readouterr().out
    assert "no job recorded: NOT SUBMITTED" in text and f"sbatch {RunDir(run).sbatch_script}" in text, text
    assert log.read_text().split()[:2] == ["-h", "-u"]
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))  # no Slurm on this machine: nothing submitted from here
    assert run_state(run).state == NOT_SUBMITTED
    assert cancel_cmd.cancel_main([str(run), "--yes"]) == 0
    assert "nothing to cancel" in capsys.readouterr().out


@pytest.mark.parametrize("relative", [False, True])
def test_a_queued_job_of_the_script_shows_pending_with_its_id(tmp_path, monkeypatch, relative):
    """sbatch writes nothing into the run dir until the job starts: squeue knows the job by its batch script."""
    run = _sbatch_run(tmp_path / "s")
    workdir, command = (run, "job.sbatch") if relative else ("/elsewhere", RunDir(run).sbatch_script)
    _fake_squeue(tmp_path, monkeypatch, f"5|RUNNING|None|/x|/other/job.sbatch\n"
                                        f"12|PENDING|Priority|{workdir}|{command}\n")
    st = run_state(run)
    assert (st.state, st.reason, st.job_id, st.probe) == ("PENDING", "Priority", "12", SLURM_JOB)
    assert [n.state for n in st.nodes] == ["pending"]


def test_a_job_of_the_script_cancelled_while_pending_is_cancelled(tmp_path, monkeypatch, capsys):
    """Cancelled before it started, the job left nothing but cancel's record: CANCELLED, not NOT SUBMITTED."""
    run = _sbatch_run(tmp_path / "s")
    _fake_squeue(tmp_path, monkeypatch, f"12|PENDING|Priority|/x|{RunDir(run).sbatch_script}\n")
    monkeypatch.setattr(cancel_cmd, "cancel_slurm", lambda ids: f"scancel {' '.join(ids)}")
    assert cancel_cmd.cancel_main([str(run), "--yes"]) == 0
    assert "scancel 12" in capsys.readouterr().out
    _fake_squeue(tmp_path, monkeypatch)  # Slurm has let it go
    st = run_state(run)
    assert (st.state, st.job_id, st.cancelled) == ("CANCELLED", "12", True)


def test_a_job_with_a_record_or_a_silent_slurm_stays_unknown(tmp_path, monkeypatch, capsys):
    """NOT SUBMITTED only when nothing of a job is in the run dir and Slurm answered; one squeue for all runs."""
    started = _sbatch_run(tmp_path / "runs" / "started")
    (RunDir(started).slurm_log_of("31")).write_text("")  # a job of it started (and left no record of its own)
    reported = _sbatch_run(tmp_path / "runs" / "reported")
    RunDir(reported).node(0).path.mkdir(parents=True)
    NodeReport(host="vm", node_rank=0, job_id="32", exit_code=0, wall_s=1.0).save(RunDir(reported).node_report(0))
    waiting = [_sbatch_run(tmp_path / "runs" / f"w{n}") for n in (1, 2)]
    log = _fake_squeue(tmp_path, monkeypatch)
    assert list_main([str(tmp_path / "runs"), "--json"]) == 0
    states = {Path(d["run_dir"]).name: d["state"] for d in json.loads(capsys.readouterr().out)}
    assert states == {"started": UNKNOWN, "reported": "COMPLETED", "w1": NOT_SUBMITTED, "w2": NOT_SUBMITTED}
    assert len(log.read_text().splitlines()) == 1
    _fake_squeue(tmp_path, monkeypatch, code=1)  # Slurm does not answer: it may be queued
    assert run_state(waiting[0]).state == UNKNOWN


# --- status without a path: one walk ---------------------------------------------------------------------------

def test_status_without_a_path_lists_each_dir_once(tmp_path, monkeypatch, capsys):
    """It walked outputs/ and multirun/ twice, for run dirs and for sweep manifests."""
    from hpc_ft.commands.status import newest_dir
    from hpc_ft.rundir.layout import SweepDir
    from hpc_ft.rundir.records import SweepManifest

    old = Path(__file__).resolve().parents[1] / "report" / "data" / "run_e5bbae0"
    shutil.copytree(old, tmp_path / "outputs" / "2026-12-01" / "10-00-00")
    pending = tmp_path / "multirun" / "2026-12-02" / "09-00-00"  # a sweep whose jobs have no run dir yet: newest
    pending.mkdir(parents=True)
    SweepManifest(executor="local", wait=False, state="submitted", plan={}).save(SweepDir(pending).manifest)
    monkeypatch.chdir(tmp_path)
    scanned: list[str] = []
    real = os.scandir

    def counting(path="."):
        scanned.append(os.path.normpath(os.fspath(path)))
        return real(path)

    monkeypatch.setattr(os, "scandir", counting)
    assert newest_dir() == Path("multirun/2026-12-02/09-00-00")
    assert scanned and len(scanned) == len(set(scanned)), sorted(scanned)
    monkeypatch.setattr(os, "scandir", real)
    assert status_main([]) == 0 and "sweep dir: multirun/2026-12-02/09-00-00" in capsys.readouterr().out
