"""`hpc-ft tune` refuses bad input before anything is submitted or written: exit 2, key, value, rule, fix."""

import pytest

from .conftest import TRIAL, tune


@pytest.mark.parametrize("extra, words", [
    (["tune.sampler=bayes"], "tune.sampler='bayes': must be one of tpe, random, grid"),
    (["tune.sampler=grid"], "optim.lr='interval(...)': tune.sampler=grid needs a finite set of values"),
    (["sched.budget_gpu_hours=0.001"], "does not pay for one trial at its planned size"),
    (["executor=debug"], "executor.name='debug': runs each job in this process"),
    (["train.eval_every_steps=0"], "tune.pruner=asha decides at evaluations"),
    (["executor=slurm", "resources.mem_gb=choice(1,2)"],  # one job array: one request for every trial
     "resources.mem_gb='choice(1,2)': executor=slurm runs a search's trials as one job array"),
])
def test_bad_search_settings_are_refused_before_anything_is_written(tmp_path, extra, words):
    res = tune(["optim.lr=tag(log,interval(1e-3,1e-1))", *TRIAL, *extra, f"hydra.sweep.dir={tmp_path / 'sw'}"],
               tmp_path, 120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert words in res.stderr and "Fix:" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "sw").exists() and not (tmp_path / "multirun").exists()


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
