"""A warmup longer than the run (trial 4): the learning rate never reaches optim.lr. Flagged before dispatch as a
warning, not refused: a first leg shorter than the warmup, resumed with a larger train.max_steps, continues the same
ramp (the warmup does not depend on max_steps), and the default warmup outlasts short smoke runs."""

import json
import subprocess
import sys

import pytest

from hpc_ft.config.compose import compose_conf
from hpc_ft.submit.executors import validate
from hpc_ft.train.optim import lr_lambda

BASE = ["model=mlp", "data=synthetic"]


def test_a_warmup_longer_than_the_run_is_a_warning_naming_key_value_and_fix(tmp_path):
    conf = compose_conf([*BASE, "train.warmup_steps=500", "train.max_steps=10"], run_dir=tmp_path)
    (warning,) = [w for w in validate(conf, gpu_count=lambda: 0) if "warmup" in w]
    assert warning.startswith("train.warmup_steps=500: longer than the run (train.max_steps=10)"), warning
    assert "2% of optim.lr" in warning and "Fix: pass train.warmup_steps=1" in warning, warning
    # what it says is what the schedule does: the last step's factor is 10/500
    assert lr_lambda(9, 500, 10, 0.1) == pytest.approx(0.02)


@pytest.mark.parametrize("overrides", [["train.warmup_steps=10", "train.max_steps=10"],  # reaches optim.lr at the end
                                       ["train.warmup_steps=0", "train.max_steps=1"], []])
def test_a_warmup_within_the_run_is_not_flagged(tmp_path, overrides):
    conf = compose_conf([*BASE, *overrides], run_dir=tmp_path)
    assert not [w for w in validate(conf, gpu_count=lambda: 0) if "warmup" in w]


def test_a_users_script_keeps_its_own_schedule(tmp_path):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    conf = compose_conf([f"script.path={script}", "train.warmup_steps=500", "train.max_steps=10"],
                        run_dir=tmp_path / "run")
    assert not [w for w in validate(conf, gpu_count=lambda: 0) if "warmup" in w]


def test_a_dry_runs_warning_goes_to_stderr_and_its_stdout_stays_one_json_document(tmp_path):
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "hpc_ft.cli", "submit", *BASE,
                          "train.warmup_steps=500", "train.max_steps=10", "dry_run=true",
                          f"hydra.run.dir={tmp_path / 'run'}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout)["train"]["max_steps"] == 10
    assert "warning: train.warmup_steps=500: longer than the run" in res.stderr
    imported = {ln.split("|")[-1].strip() for ln in res.stderr.splitlines() if ln.startswith("import time:")}
    assert "rich" not in imported  # a dry run prints plainly
