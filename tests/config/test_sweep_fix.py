"""A sweep value Hydra accepts but hpc_ft's rules refuse gets the sweep without it as its Fix (trial 4, problem 7),
as a value Hydra refuses does."""

import pytest

from hpc_ft.config.sweep_fix import sweep_refusal_fix
from hpc_ft.errors import ConfigError, Problem


def refusal(*jobs_and_keys: tuple[str, str]) -> ConfigError:
    """A ConfigError as the sweep launcher words it (hpc_ft.sweep.plan.prefixed_problems)."""
    return ConfigError([Problem(f"{jobs}: {key}", 0, "is refused", "pass something else") if jobs else
                        Problem(key, 0, "is refused", "pass something else") for jobs, key in jobs_and_keys])


SUBMIT = ["-m", "model=mlp", "data=synthetic"]


@pytest.mark.parametrize("args, error, fix", [
    # jobs 1 and 2 are optim.lr=-1 and optim.lr=0: both dropped, 0.01 kept
    (["optim.lr=0.01,-1,0"], refusal(("sweep job 1", "optim.lr"), ("sweep job 2", "optim.lr")),
     "Fix: the sweep without optim.lr=-1, optim.lr=0 (every job with them is refused); did you mean "
     "hpc-ft submit -m model=mlp data=synthetic optim.lr=0.01"),
    # the product of lr (1, 2) and batch (15, 16): jobs 0 and 2 have batch 15; the range is kept as written
    (["optim.lr=range(1,3)", "train.global_batch_size=15,16"],
     refusal(("sweep jobs 0, 2", "train.global_batch_size")),
     "Fix: the sweep without train.global_batch_size=15 (every job with it is refused); did you mean "
     "hpc-ft submit -m model=mlp data=synthetic 'optim.lr=range(1,3)' train.global_batch_size=16"),
    # the problem names the batch, but it is the worker count 3 that every refused job has
    (["resources.workers_per_node=1,2,3", "train.global_batch_size=4"],
     refusal(("sweep job 2", "train.global_batch_size")),
     "did you mean hpc-ft submit -m model=mlp data=synthetic resources.workers_per_node=1,2 "
     "train.global_batch_size=4"),
])
def test_the_fix_is_the_sweep_without_the_refused_values(args, error, fix):
    assert sweep_refusal_fix([*SUBMIT, *args], "hpc-ft submit", error).endswith(fix)


def test_the_values_kept_read_as_before():
    """A quoted value (a space, a comma) is kept in Hydra's quotes: Hydra reads the same values as before."""
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    fix = sweep_refusal_fix([*SUBMIT, "run.name='a b',c,'x,y'"], "hpc-ft submit", refusal(("sweep job 1", "run.name")))
    assert fix.startswith("Fix: the sweep without run.name=c"), fix
    (name,) = [a for a in shlex.split(fix.split("did you mean ", 1)[1]) if a.startswith("run.name=")]
    values = OverridesParser.create().parse_override(name).sweep_iterator()
    assert [getattr(v, "text", v) for v in values] == ["a b", "x,y"]


def test_no_value_left_says_so():
    fix = sweep_refusal_fix([*SUBMIT, "optim.lr=-1,0"], "hpc-ft submit",
                            refusal(("sweep job 0", "optim.lr"), ("sweep job 1", "optim.lr")))
    assert fix.startswith("Fix: every job of the sweep optim.lr=-1,0 is refused, so no value is left") and \
        "did you mean" not in fix, fix


def test_a_refused_combination_has_no_value_to_drop():
    # workers (1, 2) x batch (3, 4): only job 2 (2 workers, batch 3) is refused; each value passes elsewhere
    fix = sweep_refusal_fix([*SUBMIT, "resources.workers_per_node=1,2", "train.global_batch_size=3,4"],
                            "hpc-ft submit", refusal(("sweep job 2", "train.global_batch_size")))
    assert fix.startswith("Fix: sweep job 2: refused for a combination of values") and "did you mean" not in fix


@pytest.mark.parametrize("args, error", [
    (["optim.lr=0.01,-1"], refusal(("", "train.global_batch_size"), ("sweep job 1", "optim.lr"))),  # every job's
    (["optim.lr=0.01,-1"], refusal(("", "sched.budget_gpus"))),  # the sweep's own problem: its fix stands
    (["hydra/sweeper=optuna", "optim.lr=0.01,-1"], refusal(("sweep job 1", "optim.lr"))),  # numbered its own way
    (["optim.lr=0.01,-1"], refusal(("sweep job 7", "optim.lr"))),  # not this command's sweep
])
def test_no_sweep_fix_where_dropping_values_cannot_be_it(args, error):
    assert sweep_refusal_fix([*SUBMIT, *args], "hpc-ft submit", error) == ""


def test_a_single_run_gets_no_sweep_fix():
    assert sweep_refusal_fix(["optim.lr=-1"], "hpc-ft submit", refusal(("sweep job 0", "optim.lr"))) == ""


def test_the_cli_prints_it_after_the_error(tmp_path, run_cli):
    res = run_cli("submit", "-m", "model=mlp", "data=synthetic", "optim.lr=0.01,-1,0", cwd=tmp_path, timeout_s=120)
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out, out
    lines = res.stderr.splitlines()
    assert "sweep job 1: optim.lr=-1: must be a positive number" in res.stderr, res.stderr
    assert lines[-1] == ("Fix: the sweep without optim.lr=-1, optim.lr=0 (every job with them is refused); did you "
                         "mean hpc-ft submit -m model=mlp data=synthetic optim.lr=0.01"), res.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
