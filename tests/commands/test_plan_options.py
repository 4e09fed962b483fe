"""`hpc-ft plan`: options between the overrides are read as options, and the Fix line for a bad value keeps them
(trial 4, problem 6)."""

import json
import shlex

from hpc_ft.commands.plan import plan_main


def test_an_option_between_overrides_is_an_option(tmp_path, monkeypatch, capsys):
    """`plan -m optim.lr=1e-5,3e-5 --json model=mlp` failed: `unrecognized arguments: model=mlp`."""
    monkeypatch.chdir(tmp_path)
    assert plan_main(["-m", "optim.lr=1e-5,3e-5", "--json", "model=mlp", "--no-queue", "data=synthetic"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["assignments"]) == 2
    assert list(tmp_path.iterdir()) == []


def test_the_fix_for_a_bad_sweep_value_keeps_the_options_where_they_were(tmp_path, monkeypatch, capsys):
    """`plan -m precision=bf16,fp8 --no-queue` printed `did you mean hpc-ft plan -m precision=bf16`."""
    monkeypatch.chdir(tmp_path)
    argv = ["--queue-days", "3", "-m", "precision=bf16,fp8", "model=mlp", "data=synthetic", "--no-queue"]
    assert plan_main(argv) == 2
    err = capsys.readouterr().err
    fix = err.split("did you mean ", 1)[1].strip()
    assert shlex.split(fix) == ["hpc-ft", "plan", *argv[:3], "precision=bf16", *argv[4:]], err
    assert "Traceback" not in err
    assert plan_main(["-m", "model=mlpp", "--no-queue", "data=synthetic"]) == 2  # an option between them too
    assert capsys.readouterr().err.endswith("did you mean hpc-ft plan -m model=mlp --no-queue data=synthetic\n")
