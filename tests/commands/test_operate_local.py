"""hpc-ft status, logs, cancel and list on the local executor, with real detached jobs (issue 15.1-4)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import kill_job_processes, wait_until

REPO = Path(__file__).resolve().parents[2]
OLD_RUN = REPO / "tests" / "report" / "data" / "run_e5bbae0"


def _status(run_cli, path: Path) -> dict:
    res = run_cli("status", str(path), "--json", timeout_s=60)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


@pytest.mark.slow
def test_status_logs_cancel_list_then_resume(tmp_path, run_cli, synth):
    run = tmp_path / "runs" / "held"
    with_telemetry = [o for o in synth if o != "telemetry=off"] + ["telemetry.interval_s=0.5"]
    sub = run_cli("submit", *with_telemetry, "wait=false", "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=5",
                  "train.log_every_steps=1", f"hydra.run.dir={run}")
    assert sub.returncode == 0, sub.stdout + sub.stderr
    try:
        wait_until((run / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold at step 5")
        st = _status(run_cli, run)
        assert st["state"] == "RUNNING" and st["probe"] == "process" and st["job_id"].isdigit()
        assert st["step"] == 5 and st["spec"]["max_steps"] == 20 and st["eta_s"] is not None
        assert [n["state"] for n in st["nodes"]] == ["running"]
        assert st["last_sample"]["cpu_util_pct"] >= 0 and st["last_sample"]["t"] > 0  # node 0's newest sample
        text = run_cli("status", str(run)).stdout
        assert "telemetry (node 0):" in text and "s ago" in text
        assert f"job {st['job_id']} (local process): RUNNING" in text and "step 5 of 20" in text and "ETA" in text

        listed = run_cli("list", str(tmp_path / "runs"))
        assert listed.returncode == 0 and "RUNNING" in listed.stdout and str(run) in listed.stdout

        logs = run_cli("logs", str(run))
        assert logs.returncode == 0 and "torchrun.log <==" in logs.stdout and "step 5" in logs.stdout, logs.stdout
        follow = subprocess.Popen([str(Path(sys.executable).with_name("hpc-ft")), "logs", str(run), "-f"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  stdin=subprocess.DEVNULL)

        refused = run_cli("cancel", str(run))  # no terminal to confirm on
        assert refused.returncode == 2 and "--yes" in refused.stderr and "Traceback" not in refused.stderr
        assert _status(run_cli, run)["state"] == "RUNNING"
        cancelled = run_cli("cancel", str(run), "--yes", timeout_s=120)
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        assert f"stopped local job {st['job_id']} (SIGTERM: checkpoint at the current step)" in cancelled.stdout
        assert "continues from the newest checkpoint" in cancelled.stdout  # hpc_ft's loop: it checkpointed
        out, _ = follow.communicate(timeout=60)  # -f returns once the job has ended
        assert follow.returncode == 0 and "preempted" in out, out
    finally:
        kill_job_processes(run / "job.yaml")
    st = _status(run_cli, run)
    # The user cancelled it (the run dir's cancel record): CANCELLED, its node stopped at a checkpoint.
    assert st["state"] == "CANCELLED" and [n["state"] for n in st["nodes"]] == ["preempted"], st
    assert run_cli("cancel", str(run), "--yes").stdout.startswith("nothing to cancel")
    assert (run / "checkpoints").is_dir() and (run / "metrics.jsonl").exists()  # the run dir stays

    resumed = run_cli("submit", *synth, f"hydra.run.dir={run}")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from" in (run / "nodes" / "node0" / "torchrun.log").read_text()
    st = _status(run_cli, run)  # another job: the cancel record of the first one does not make it CANCELLED
    assert st["state"] == "COMPLETED" and st["step"] == 20 and st["metric"][0] == "eval_accuracy"
    listed = run_cli("list", str(tmp_path / "runs"), "--sort", "metric")
    assert "COMPLETED" in listed.stdout and "eval_accuracy=" in listed.stdout and "20/20" in listed.stdout


@pytest.mark.slow
def test_the_command_cancel_prints_resumes_the_run_in_its_dir(tmp_path, run_cli, synth):
    """`hpc-ft cancel` printed `hpc-ft submit ... hydra.run.dir=DIR`. The command it prints now, run as printed from
    another directory, resubmits the run's own overrides (wait=false among them) into the same dir, which resumes."""
    runs = tmp_path / "runs"
    run = runs / "held"
    sub = run_cli("submit", *synth, "wait=false", "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=5", f"hydra.run.dir={run}")
    assert sub.returncode == 0, sub.stdout + sub.stderr
    try:
        wait_until((run / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold at step 5")
        cancelled = run_cli("cancel", str(run), "--yes", timeout_s=120)
        assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
        wait_until(lambda: _status(run_cli, run)["state"] == "CANCELLED", 120, "the cancelled job to end")
        (line,) = [ln for ln in cancelled.stdout.splitlines() if "hpc-ft submit" in ln]
        argv = shlex.split(line)
        assert argv == ["hpc-ft", "submit", "--from", str(run), f"hydra.run.dir={run}"], cancelled.stdout
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        resumed = run_cli(*argv[1:], cwd=elsewhere)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        st = wait_until(lambda: (s := _status(run_cli, run))["state"] == "COMPLETED" and s, 300,
                        "the resumed run to complete", poll_s=1.0)
    finally:
        kill_job_processes(run / "job.yaml")
    assert st["step"] == 20 and "resumed from" in (run / "nodes" / "node0" / "torchrun.log").read_text()
    assert [p.name for p in runs.iterdir()] == ["held"] and list(elsewhere.iterdir()) == []  # no new run dir


@pytest.mark.slow
def test_status_counts_the_requeues_of_a_local_run(tmp_path, run_cli, synth):
    """Preempted once on the local executor (the preemption signal to the node task, as submitit's controller
    sends it before the time limit): submitit requeues it, it resumes and completes, and status says
    "requeued 1x" from the run dir's own record (there is no sacct to ask)."""
    from hpc_ft.node.task import process_tree

    run = tmp_path / "run"
    sub = run_cli("submit", *synth, "wait=false", "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=5", f"hydra.run.dir={run}")
    assert sub.returncode == 0, sub.stdout + sub.stderr
    try:
        wait_until((run / "nodes" / "node0" / "held_at_step").exists, 180, "training to hold at step 5")
        st = _status(run_cli, run)
        assert st["state"] == "RUNNING" and st["requeues"] == 0, st
        controller = int(st["job_id"])
        (task,) = [pid for pid in process_tree(controller)
                   if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()]
        os.kill(task, signal.SIGUSR2)  # executor.preempt_signal
        st = wait_until(lambda: (s := _status(run_cli, run))["state"] == "COMPLETED" and s, 300,
                        "the requeued run to complete", poll_s=1.0)
    finally:
        kill_job_processes(run / "job.yaml")
    assert st["requeues"] == 1 and st["step"] == 20, st
    assert "resumed from" in (run / "nodes" / "node0" / "torchrun.log").read_text()
    assert st["job_id"] == str(controller)  # the same local job, run twice
    assert "COMPLETED, requeued 1x" in run_cli("status", str(run)).stdout


@pytest.mark.slow
def test_status_of_a_local_sweep_has_one_line_per_job(tmp_path, run_cli, synth):
    sweep = tmp_path / "sweep"
    res = run_cli("submit", "-m", *synth, "train.max_steps=3", "optim.lr=0.01,0.02", f"hydra.sweep.dir={sweep}")
    assert res.returncode == 0, res.stdout + res.stderr
    out = run_cli("status", str(sweep)).stdout
    lines = [ln for ln in out.splitlines() if "COMPLETED" in ln]
    assert len(lines) == 2 and all("3/3" in ln for ln in lines), out
    assert "sweep dir:" in out and "(2 job(s))" in out


def test_a_detached_local_sweeps_running_jobs_show_running_in_status_and_report(tmp_path, run_cli, synth):
    """A wait=false sweep's jobs are started by its detached driver: each holds its run dir as a wait=false run
    does, so status says RUNNING (it said UNKNOWN, "no job recorded") and the report's nodes say running (missing)."""
    sweep = tmp_path / "sw"
    sub = run_cli("submit", "-m", *synth, "wait=false", "+executor.env.HPC_FT_TEST_HOLD_AT_STEP=3",
                  "sched.array_parallelism=2", "optim.lr=0.01,0.02", f"hydra.sweep.dir={sweep}")
    assert sub.returncode == 0, sub.stdout + sub.stderr
    try:
        for n in (0, 1):
            wait_until((sweep / str(n) / "nodes" / "node0" / "held_at_step").exists, 180, f"job {n} to hold")
        text = run_cli("status", str(sweep)).stdout
        assert len([ln for ln in text.splitlines() if "RUNNING" in ln]) == 2, text
        job = _status(run_cli, sweep / "0")
        assert job["state"] == "RUNNING" and job["probe"] == "process", job
        rep = run_cli("report", str(sweep / "0"))
        assert rep.returncode == 0, rep.stdout + rep.stderr
        nodes = json.loads((sweep / "0" / "report" / "report.json").read_text())["nodes"]
        assert [n["status"] for n in nodes] == ["running"] and "sent no report" not in rep.stdout
    finally:
        run_cli("cancel", str(sweep), "--yes", timeout_s=120)
    wait_until(lambda: json.loads((sweep / "manifest.json").read_text())["state"] == "finished", 120,
               "the sweep driver to finish")


def test_bad_paths_are_refused_with_exit_2(tmp_path, run_cli):
    for cmd in (["status", str(tmp_path / "nope")], ["logs", str(tmp_path)], ["cancel", str(tmp_path), "--yes"],
                ["list", str(tmp_path / "nope")]):
        res = run_cli(*cmd, timeout_s=60)
        assert res.returncode == 2, (cmd, res.stdout, res.stderr)
        assert "error:" in res.stderr and "Fix:" in res.stderr and "Traceback" not in res.stderr
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    res = run_cli("logs", str(run), "--node", "7")
    assert res.returncode == 2 and "Fix: pass a --node from 0 to 1" in res.stderr, res.stderr


def test_status_and_list_of_a_preempted_run_dir_written_by_an_earlier_version(tmp_path, run_cli):
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    st = _status(run_cli, run)
    # A 2-node run stopped for preemption at step 2 of 4 (tests/report/test_old_run_dir.py).
    assert st["state"] == "PREEMPTED" and st["job_id"] == "10136" and st["step"] == 2
    assert [n["state"] for n in st["nodes"]] == ["preempted", "preempted"]
    res = run_cli("list", str(tmp_path))
    assert "PREEMPTED" in res.stdout and "2/4" in res.stdout and str(run) in res.stdout


# status, list and every subcommand's -h run on login nodes: no torch (timed in benchmarks/bench_coldstart.py).
NO_TORCH = textwrap.dedent("""
    import contextlib, io, json, sys
    import hpc_ft.cli
    codes = []
    for argv in (["status", RUN], ["status", RUN, "--json"], ["list", ROOT], ["logs", RUN], ["cancel", RUN, "--yes"],
                 *([c, "-h"] for c in ("submit", "sbatch", "report", "plan", "status", "logs", "cancel", "list"))):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                codes.append(hpc_ft.cli.main(argv))
            except SystemExit as exc:  # argparse's -h
                codes.append(exc.code)
    print(json.dumps({"codes": codes, "loaded": [m for m in ("torch", "pynvml", "datasets", "peft")
                                                  if m in sys.modules]}))
""")


def test_status_list_logs_and_help_load_no_torch(tmp_path):
    run = tmp_path / "old"
    shutil.copytree(OLD_RUN, run)
    code = f"RUN, ROOT = {str(run)!r}, {str(tmp_path)!r}\n" + NO_TORCH
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["codes"] == [0] * 13, res.stderr[-3000:]
    assert out["loaded"] == [], f"loaded by status/list/logs/cancel/-h: {out['loaded']}"


def test_status_of_a_script_run_reads_its_progress_records(tmp_path, run_cli):
    """While a script runs, its step and samples/s come from its own progress records (it writes no metrics.jsonl)."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.rundir.spec import save_spec
    from hpc_ft.submit.executors import resolve

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    run = tmp_path / "run"
    save_spec(resolve(compose_conf([f"script.path={script}"], run_dir=run)))
    records = [{"step": s, "time": 1000.0 + s, "samples": 64 * s} for s in (1, 2, 3)]
    RunDir(run).progress.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 4, "ti')  # torn
    st = _status(run_cli, run)
    assert st["step"] == 3 and st["samples_per_s"] == pytest.approx(64.0) and st["spec"]["max_steps"] is None
    text = run_cli("status", str(run)).stdout
    assert "step 3, 64.0 samples/s" in text and " of " not in text.split("step 3")[1].splitlines()[0], text


def test_status_without_a_path_passes_over_another_hydra_apps_newer_run(tmp_path, run_cli):
    """outputs/ is shared with the user's own Hydra apps: status without a path shows hpc_ft's newest run."""
    ours = tmp_path / "outputs" / "2026-12-01" / "10-00-00"
    shutil.copytree(OLD_RUN, ours)
    theirs = tmp_path / "outputs" / "2026-12-01" / "11-00-00"
    (theirs / ".hydra").mkdir(parents=True)
    os.utime(ours, (1, 1))  # theirs is the newer one
    res = run_cli("status", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / json.loads(res.stdout)["run_dir"]).resolve() == ours.resolve()  # relative to its cwd


def test_status_without_a_path_shows_the_run_that_started_last_named_dirs_included(tmp_path, monkeypatch, capsys):
    """Right after a detached wait=false job in outputs/op1, status showed an older outputs/DATE/TIME run: it looked
    only at outputs/DATE/TIME and multirun/. It finds runs as list does and takes the one that started last (its
    own records' times, not its dir's); a sweep's job stands for its sweep."""
    from hpc_ft.commands.status import newest_dir, status_main
    from hpc_ft.rundir.layout import RunDir, SweepDir
    from hpc_ft.rundir.lock import NO_PROBE, RunDirLock
    from hpc_ft.rundir.records import SweepManifest

    dated = tmp_path / "outputs" / "2026-12-02" / "05-26-17"
    named = tmp_path / "outputs" / "op1"
    sweep = tmp_path / "multirun" / "2026-12-01" / "09-00-00"
    for run, submitted in ((dated, 2000), (named, 1000), (sweep / "0", 1500)):
        shutil.copytree(OLD_RUN, run)
        os.utime(RunDir(run).spec, (submitted, submitted))
    SweepManifest(executor="local", wait=True, state="finished", plan={}).save(SweepDir(sweep).manifest)
    lock = RunDirLock(named)  # resubmitted now with the same job.yaml (kept, with its old time), detached
    lock.acquire("local", NO_PROBE)
    lock.record_job("4242")
    lock.detach()
    monkeypatch.chdir(tmp_path)
    assert status_main([]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "run dir: outputs/op1"
    RunDir(named).owner.unlink()  # its submission over: job.yaml's time is its start again
    assert newest_dir() == Path("outputs/2026-12-02/05-26-17")
    os.utime(RunDir(sweep / "0").spec, (3000, 3000))
    assert newest_dir() == Path("multirun/2026-12-01/09-00-00")
