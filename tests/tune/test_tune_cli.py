"""`hpc-ft tune` refuses bad input before anything is submitted or written: exit 2, key, value, rule, fix."""

import signal
import subprocess

import pytest

from hpc_ft.rundir.layout import RunDir
from tests.conftest import wait_until

from .conftest import EXE, TRIAL, tune


@pytest.mark.parametrize("extra, words", [
    (["tune.sampler=bayes"], "tune.sampler='bayes': must be one of tpe, random, grid"),
    (["tune.sampler=grid"], "optim.lr='interval(...)': tune.sampler=grid needs a finite set of values"),
    (["sched.budget_gpu_hours=0.001"], "does not pay for one trial at its planned size"),
    (["executor=debug"], "executor.name='debug': runs each job in this process"),
    (["train.eval_every_steps=0"], "tune.pruner=asha decides at evaluations"),
    (["executor=slurm", "resources.mem_gb=choice(1,2)"],  # one job array: one request for every trial
     "resources.mem_gb='choice(1,2)': executor=slurm runs a search's trials as one job array"),
    # the task's own metrics, before trial 0 runs (it used to be refused at trial 0's first evaluation)
    (["tune.metric=accuracy"], "tune.metric='accuracy': is not a metric of SequenceClassification, which evaluates "
                               "eval_accuracy, eval_loss. Fix: pass tune.metric=eval_accuracy"),
])
def test_bad_search_settings_are_refused_before_anything_is_written(tmp_path, extra, words):
    res = tune(["optim.lr=tag(log,interval(1e-3,1e-1))", *TRIAL, *extra, f"hydra.sweep.dir={tmp_path / 'sw'}"],
               tmp_path, 120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert words in res.stderr and "Fix:" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "sw").exists() and not (tmp_path / "multirun").exists()


def test_a_typo_in_a_searched_key_gets_the_fix_for_the_typo(tmp_path):
    res = tune(["optim.lrr=interval(1e-3,1e-1)", *TRIAL, f"hydra.sweep.dir={tmp_path / 'sw'}"], tmp_path, 120)
    assert res.returncode == 2, res.stderr
    fix = [ln for ln in res.stderr.splitlines() if ln.startswith("Fix:")][-1]
    assert "did you mean" in fix and "optim.lr=interval(1e-3,1e-1)" in fix and "comma" not in fix, res.stderr


def test_a_range_reaching_an_invalid_value_is_refused_at_its_end(tmp_path):
    res = tune(["optim.lr=interval(-1.0,0.1)", *TRIAL, f"hydra.sweep.dir={tmp_path / 'sw'}"], tmp_path, 120)
    assert res.returncode == 2 and "optim.lr=-1.0: must be a positive number" in res.stderr, res.stderr
    assert not (tmp_path / "sw").exists()


def test_help_names_the_grammar_and_the_settings(tmp_path):
    from hpc_ft.cli import main

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["tune", "-h"]) == 0
    assert "tag(log,interval(1e-5,1e-3))" in out.getvalue() and "tune.pruner=asha|median|none" in out.getvalue()


def test_kill_stops_the_search_as_ctrl_c_does(tmp_path):
    """SIGTERM (kill, a closed terminal's SIGHUP likewise) ends `hpc-ft tune` through its Ctrl-C path: the line that
    says how to continue, the unreleased tasks cancelled, exit 143; Python's default would end it silently."""
    sweep = tmp_path / "sw"
    args = ["optim.lr=tag(log,interval(1e-3,1e-1))", *TRIAL, "train.max_steps=5000", "tune.trials=2",
            "tune.parallelism=1", "tune.pruner=none", f"hydra.sweep.dir={sweep}"]
    driver = subprocess.Popen([EXE, "tune", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: RunDir(sweep / "0").spec.exists(), 120, "trial 0's job.yaml (the driver is running)")
        driver.send_signal(signal.SIGTERM)
        out, err = driver.communicate(timeout=60)
    finally:
        driver.kill()
        # The trial's own job goes on without its driver (as after Ctrl-C); this test stops it, and waits until the
        # job has ended: its node report, or no live job (a job stopped while its process was still loading
        # submitit's pickle dies of the SIGTERM before its node task starts, and leaves no report).
        cancel = subprocess.run([EXE, "cancel", str(sweep / "0"), "--yes"], cwd=tmp_path, capture_output=True,
                                text=True, timeout=120, stdin=subprocess.DEVNULL)
        if cancel.returncode == 0 and "stopped local job" in cancel.stdout:
            from hpc_ft.commands.runstate import run_state

            wait_until(lambda: RunDir(sweep / "0").node_report(0).exists()
                       or not run_state(sweep / "0", query_slurm=False).live, 120, "trial 0's job to end")
    assert driver.returncode == 143, out[-2000:] + err[-2000:]
    assert "stopped; running trials go on. Continue with: hpc-ft tune" in err and "Traceback" not in err, err
