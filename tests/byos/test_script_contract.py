"""The contract for a user's own script (hpc_ft.script_api) and how hpc_ft reads it: fast, no training."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hpc_ft
from hpc_ft import script_api
from hpc_ft.config.compose import compose_conf
from hpc_ft.errors import PREEMPTED_EXIT_CODE, ConfigError
from hpc_ft.job import resolve
from hpc_ft.node import payload
from hpc_ft.node.launch import torchrun_argv, worker_env
from hpc_ft.node.rendezvous import Placement
from hpc_ft.rundir import progress
from hpc_ft.rundir.layout import RunDir
from hpc_ft.submit.executors import validate

SCRIPTS = Path(__file__).parent / "scripts"
API_FILE = Path(hpc_ft.__file__).parent / "script_api.py"


def test_the_contract_module_agrees_with_hpc_ft():
    """script_api imports nothing of hpc_ft (one file on the cluster), so its constants are checked here."""
    assert script_api.REQUEUE_EXIT_CODE == PREEMPTED_EXIT_CODE
    assert script_api.RECORD_KEYS == progress.RECORD_KEYS and script_api.REQUEUE_EVENT == progress.REQUEUE_EVENT
    assert (script_api.RUN_DIR_ENV, script_api.PROGRESS_ENV) == (payload.RUN_DIR_ENV, payload.PROGRESS_ENV)


def test_the_contract_module_is_one_file_without_torch(tmp_path):
    """Loaded from its file alone (as a copy beside a script would be), it imports neither hpc_ft nor torch."""
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('script_api', {str(API_FILE)!r})\n"
            "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
            "bad = [n for n in sys.modules if n == 'torch' or n.startswith('hpc_ft')]\n"
            "assert not bad, bad\n"
            "assert m.run_dir() is None and m.preempted() is False\n"
            "m.report(1, samples=4, loss=0.5)\n")  # outside hpc_ft: writes nothing, raises nothing
    env = {k: v for k, v in os.environ.items() if not k.startswith("HPC_FT_")}
    res = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_forwarded_signal_sets_the_flag_instead_of_killing(tmp_path):
    code = ("import os, signal\n"
            "from hpc_ft import script_api\n"
            "assert not script_api.preempted()\n"
            "os.kill(os.getpid(), signal.SIGUSR2)\n"
            "assert script_api.preempted() and script_api.preemption_requested()\n"
            "script_api.exit_for_requeue(7)\n")
    prog = tmp_path / "progress.jsonl"
    env = {**os.environ, "HPC_FT_PREEMPT_SIGNAL": "SIGUSR2", "HPC_FT_PROGRESS_FILE": str(prog), "RANK": "0"}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == PREEMPTED_EXIT_CODE, res.stderr
    (rec,) = progress.read_progress(prog)
    assert rec["event"] == "requeue" and rec["step"] == 7


def test_report_writes_on_rank_0_only_and_refuses_bad_metrics(tmp_path, monkeypatch):
    prog = tmp_path / "progress.jsonl"
    monkeypatch.setenv("HPC_FT_PROGRESS_FILE", str(prog))
    monkeypatch.setenv("RANK", "1")
    script_api.report(1, samples=8, loss=1.0)
    assert not prog.exists()
    monkeypatch.setenv("RANK", "0")
    script_api.report(1, samples=8, tokens=80, loss=1.0, eval_accuracy=0.75)
    (rec,) = progress.read_progress(prog)
    assert rec["step"] == 1 and rec["samples"] == 8 and rec["eval_accuracy"] == 0.75 and rec["time"] > 0
    with pytest.raises(ValueError, match="finite"):
        script_api.report(2, loss=float("nan"))
    with pytest.raises(ValueError, match="reserved"):
        script_api.report(2, event=3)


def test_progress_gives_throughput_metrics_and_the_attempts_own_rates():
    recs = [{"step": 1, "time": 100.0, "samples": 16, "tokens": 160, "loss": 2.0},  # an earlier attempt
            {"step": 2, "time": 101.0, "samples": 32, "tokens": 320, "loss": 1.5},
            {"step": 2, "time": 200.0, "samples": 32, "tokens": 320},  # this attempt, resumed at step 2
            {"step": 4, "time": 202.0, "samples": 64, "tokens": 640, "loss": 1.0, "eval_accuracy": 0.9,
             "flops_per_sample": 1e6, "wall_s": 3.0},  # a metric named like a TrainResult field is dropped
            "not a record line"]
    r = progress.progress_result([x for x in recs if isinstance(x, dict)], since_unix_s=150.0, world_size=4,
                                 wall_s=5.0, requeue_asked=False)
    assert r.steps == 4 and r.start_step == 2 and r.samples_per_s == 16.0 and r.tokens_per_s == 160.0
    assert r.step_time_s == 1.0 and r.final_loss == 1.0 and r.metrics == {"eval_accuracy": 0.9}
    assert r.flops_per_sample == 1e6 and r.wall_s == 5.0 and not r.preempted
    assert progress.progress_result([], since_unix_s=0, world_size=1, wall_s=1, requeue_asked=False) is None


def test_a_torn_progress_line_is_skipped(tmp_path):
    p = tmp_path / "progress.jsonl"
    p.write_text('{"step": 1, "time": 1.0}\n{"step": 2, "ti')
    assert progress.read_progress(p) == [{"step": 1, "time": 1.0}]


def _script_conf(tmp_path, *overrides):
    return compose_conf([f"script.path={SCRIPTS / 'plain_ddp.py'}", "resources.nodes=2", "telemetry=off",
                         *overrides], run_dir=tmp_path / "run")


def test_torchrun_starts_the_users_script_with_its_arguments_and_the_contract_env(tmp_path):
    # Hydra reads 3e-5 as a number (the script gets 3e-05); quoted, the text reaches the script as typed.
    spec = resolve(_script_conf(tmp_path, "script.args=[--steps,4,--lr,'3e-5']"))
    place = Placement(1, 2, "42", "host1", "127.0.0.1", 29999)
    argv = torchrun_argv(spec, place)
    assert argv[-5:] == [str(SCRIPTS / "plain_ddp.py"), "--steps", "4", "--lr", "3e-5"]
    assert "hpc_ft.train" not in argv and "--nnodes=2" in argv
    env = worker_env(spec, place, base={})
    assert env["HPC_FT_RUN_DIR"] == str(spec.run_dir)
    assert env["HPC_FT_PROGRESS_FILE"] == str(RunDir.of(spec).progress)
    module = resolve(compose_conf(["script.module=my_pkg.train", "script.args=[-x]"], run_dir=tmp_path / "m"))
    assert torchrun_argv(module, place)[-3:] == ["-m", "my_pkg.train", "-x"]


def test_a_relative_script_path_is_made_absolute_for_every_node(tmp_path, monkeypatch):
    monkeypatch.chdir(SCRIPTS)
    spec = resolve(compose_conf(["script.path=plain_ddp.py"], run_dir=tmp_path / "run"))
    assert spec.conf.script.path == str(SCRIPTS / "plain_ddp.py")


def test_a_script_job_skips_the_loops_settings(tmp_path):
    """model/data/optim/train.* belong to hpc_ft's loop: a script job with a batch the loop would refuse runs."""
    conf = _script_conf(tmp_path, "train.global_batch_size=3")
    validate(conf)  # no ConfigError: 3 is no multiple of the world size 4, but the script has its own batch
    with pytest.raises(ConfigError, match="train.global_batch_size"):
        validate(compose_conf(["model=mlp", "data=synthetic", "resources.nodes=2", "train.global_batch_size=3"],
                              run_dir=tmp_path / "loop"))


def test_bad_script_settings_are_refused_naming_the_key(tmp_path):
    with pytest.raises(ConfigError) as e:
        validate(compose_conf(["script.path=no_such_train.py", "script.module=also.given"], run_dir=tmp_path / "r"))
    keys = {p.key for p in e.value.problems}
    assert keys == {"script", "script.path"}
    with pytest.raises(ConfigError, match="script.module"):
        validate(compose_conf(["script.module=not a module"], run_dir=tmp_path / "r2"))


def test_the_cli_refuses_a_missing_script_before_submitting(tmp_path, run_cli):
    run = tmp_path / "run"
    res = run_cli("submit", "script.path=missing_train.py", f"hydra.run.dir={run}", cwd=tmp_path, timeout_s=120)
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "script.path" in out and "missing_train.py" in out and "Traceback" not in out
    assert not (run / "job.yaml").exists()


def test_the_dry_run_shows_the_script_command(tmp_path, run_cli):
    res = run_cli("submit", f"script.path={SCRIPTS / 'plain_ddp.py'}", "script.args=[--steps,3]", "dry_run=true",
                  f"hydra.run.dir={tmp_path / 'run'}", timeout_s=120)
    assert res.returncode == 0, res.stderr
    d = json.loads(res.stdout[res.stdout.index("{"):])
    assert d["script"]["args"] == ["--steps", "3"]
    assert d["nodes"][0]["torchrun"].endswith(f"{SCRIPTS / 'plain_ddp.py'} --steps 3")


def test_the_debug_executor_runs_the_script_in_this_process(tmp_path, monkeypatch):
    """World size 1, in the submitting process (pdb works): the script records its pid, world size and the
    user's executor.env (set for the run, as under torchrun, and gone again afterwards)."""
    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather

    monkeypatch.delenv("STEPS", raising=False)
    monkeypatch.setenv("HPC_FT_TEST_KEPT", "before")
    script = tmp_path / "whoami.py"
    script.write_text("import json, os, sys\n"
                      "from hpc_ft import script_api\n"
                      "out = script_api.run_dir() / 'whoami.json'\n"
                      "out.write_text(json.dumps({'pid': os.getpid(), 'world': os.environ['WORLD_SIZE'],\n"
                      "    'argv': sys.argv[1:], 'master': os.environ['MASTER_ADDR'],\n"
                      "    'steps': os.environ.get('STEPS'), 'kept': os.environ.get('HPC_FT_TEST_KEPT')}))\n"
                      "script_api.report(1, samples=1, accuracy=0.5)\n"
                      "sys.exit(3)\n")
    spec = resolve(compose_conf([f"script.path={script}", "script.args=[--a,1]", "executor=debug", "telemetry=off",
                                 "+executor.env.STEPS=5", "+executor.env.HPC_FT_TEST_KEPT=during"],
                                run_dir=tmp_path / "run"))
    job = submit(spec)
    (report,) = gather(job, spec)
    seen = json.loads((spec.run_dir / "whoami.json").read_text())
    assert seen == {"pid": os.getpid(), "world": "1", "argv": ["--a", "1"], "master": "127.0.0.1", "steps": "5",
                    "kept": "during"}
    assert report.exit_code == 3 and report.train.metrics == {"accuracy": 0.5}
    # The environment is restored: the contract's and the user's variables unset, an overridden one as it was.
    assert "HPC_FT_RUN_DIR" not in os.environ and "STEPS" not in os.environ
    assert os.environ["HPC_FT_TEST_KEPT"] == "before"


def test_the_in_process_environment_is_restored_when_the_run_raises(monkeypatch):
    from hpc_ft.node.launch import scoped_environ

    monkeypatch.delenv("HPC_FT_TEST_NEW", raising=False)
    monkeypatch.setenv("HPC_FT_TEST_OLD", "old")
    with pytest.raises(KeyboardInterrupt):
        with scoped_environ({"HPC_FT_TEST_NEW": "1", "HPC_FT_TEST_OLD": "new"}):
            assert os.environ["HPC_FT_TEST_NEW"] == "1" and os.environ["HPC_FT_TEST_OLD"] == "new"
            raise KeyboardInterrupt  # Ctrl-C in pdb, or the loop's own error
    assert "HPC_FT_TEST_NEW" not in os.environ and os.environ["HPC_FT_TEST_OLD"] == "old"
