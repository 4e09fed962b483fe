"""The hpc-ft command: fast paths import no torch; bad configs exit non-zero and dispatch nothing."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "hpc_ft.cli"]


def run(args, cwd, **kw):
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, **kw)


def imported_modules(args, cwd):
    res = subprocess.run([sys.executable, "-X", "importtime", "-m", "hpc_ft.cli", *args], cwd=cwd,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in res.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", [["--help"], ["submit", "dry_run=true", "hydra.run.dir=RUN"],
                                  ["submit", "dry_run=true", "resources.nodes=2", "hydra.run.dir=RUN"]])
def test_fast_paths_do_not_import_torch(tmp_path, args):
    args = [a.replace("RUN", str(tmp_path / "run")) for a in args]
    mods = imported_modules(args, tmp_path)
    assert "hpc_ft" in mods
    assert not {m for m in mods if m == "torch" or m.startswith("torch.")}
    if "dry_run=true" in args:  # its JSON is printed plainly: rich alone is a tenth of the dry run's cold start
        assert "rich" not in mods


def test_dry_run_prints_job_and_dispatches_nothing(tmp_path):
    res = run(["submit", "dry_run=true", "resources.nodes=2", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert res.returncode == 0, res.stderr
    desc = json.loads(res.stdout)
    assert desc["resources"]["world_size"] == 4
    assert [n["node_rank"] for n in desc["nodes"]] == [0, 1]
    assert "--rdzv-backend=c10d" in desc["nodes"][1]["torchrun"]
    assert not (tmp_path / "run" / "job.yaml").exists()
    assert not (tmp_path / "run" / "submitit").exists()


def test_a_dry_run_whose_reader_went_away_stops_quietly_and_leaves_no_run_dir(tmp_path):
    """`hpc-ft submit dry_run=true | head -1`: the pipe closes before the JSON is written."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: every write fails with EPIPE
    try:
        res = subprocess.run([*CLI, "submit", "dry_run=true"], cwd=tmp_path, stdout=write_end,
                             stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert res.returncode == 141 and "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []  # the timestamped run dir Hydra made is gone, outputs/ with it


def _copy_of_old_run(tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(Path(__file__).parent / "report" / "data" / "run_e5bbae0", run)
    return run


def test_a_report_whose_reader_went_away_stops_quietly(tmp_path):
    """`hpc-ft report RUN | head -1`: rich's Console would exit 1 on the closed pipe, the status of a failed job."""
    import os

    run = _copy_of_old_run(tmp_path)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        res = subprocess.run([*CLI, "report", str(run)], cwd=tmp_path, stdout=write_end, stderr=subprocess.PIPE,
                             text=True, timeout=120)
    finally:
        os.close(write_end)
    assert res.returncode == 141 and "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr, res.stderr


def test_output_that_cannot_be_written_is_one_line_and_status_1(tmp_path):
    """`hpc-ft status RUN > /dev/full`: one line naming the write error, as coreutils' tools say it; no traceback."""
    run = _copy_of_old_run(tmp_path)
    for args in (["status", str(run)], ["report", str(run)]):
        with open("/dev/full", "w") as full:
            res = subprocess.run([*CLI, *args], cwd=tmp_path, stdout=full, stderr=subprocess.PIPE, text=True,
                                 timeout=120)
        assert res.returncode == 1, (args, res.stderr)
        assert res.stderr.strip() == "hpc-ft: write error: No space left on device", (args, res.stderr)


def test_running_in_process_leaves_hydras_version_base_and_argv_as_they_were(tmp_path):
    """A later Hydra app of the same process (a notebook's, Hydra's own launcher test suites) keeps its own default:
    hpc_ft's version base 1.3 would turn off the job's change of directory that Hydra 1.1's default makes."""
    code = ("import contextlib, io, sys\n"
            "import hydra.version as v\n"
            "import hpc_ft.cli\n"
            "before, argv = v.getbase(), list(sys.argv)\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    code = hpc_ft.cli.main(['submit', 'dry_run=true', 'model=mlp', 'data=synthetic'])\n"
            "after_cli = v.getbase() is before\n"
            "from hpc_ft.config.compose import compose_conf\n"
            "compose_conf(['model=mlp', 'data=synthetic'], run_dir='run')  # the Python API's compose\n"
            "print(code, after_cli, v.getbase() is before, sys.argv == argv)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["0", "True", "True", "True"], res.stdout + res.stderr[-2000:]


@pytest.mark.parametrize("key", ["hydra.run.dir", "++hydra.run.dir"])
def test_a_refused_resubmission_leaves_the_named_run_dirs_hydra_files_as_they_were(tmp_path, key):
    """Hydra writes .hydra/ before hpc_ft's checks: the earlier run's config.yaml and overrides.yaml come back."""
    rd = tmp_path / "run"
    (rd / ".hydra").mkdir(parents=True)
    (rd / ".hydra" / "config.yaml").write_text("the earlier run's config\n")
    (rd / ".hydra" / "config.yaml").chmod(0o644)
    (rd / "job.yaml").write_text("the earlier run's job\n")
    before = {p.relative_to(rd): (p.read_bytes(), p.stat().st_mode) for p in rd.rglob("*") if p.is_file()}
    res = run(["submit", "model=mlp", "data=synthetic", "train.max_steps=-1", f"{key}={rd}"], tmp_path)
    assert res.returncode == 2 and "train.max_steps" in res.stderr, res.stderr
    after = {p.relative_to(rd): (p.read_bytes(), p.stat().st_mode) for p in rd.rglob("*") if p.is_file()}
    assert after == before  # no overrides.yaml, hydra.yaml or hpc_ft.log of the refused job either


def test_a_finished_run_submitted_again_is_refused_and_its_run_dir_left_as_it_was(tmp_path, monkeypatch, capsys):
    # The same command again started a job that trained 0 steps and overwrote train.json with final_loss nan.
    from hpc_ft import cli
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.rundir.spec import write_spec
    from hpc_ft.submit.executors import resolve
    from hpc_ft.train.checkpoint import ckpt_path

    overrides = ["model=mlp", "data=synthetic", "train.max_steps=20", "telemetry=off"]
    rd = RunDir(tmp_path / "run")
    spec = resolve(compose_conf(overrides, run_dir=rd.path), overrides)
    write_spec(spec)
    ckpt_path(rd.path, 20).parent.mkdir()
    ckpt_path(rd.path, 20).write_bytes(b"the step 20 checkpoint")  # its name is all a check before dispatch reads
    rd.node(0).path.mkdir(parents=True)
    rd.node(0).train_result.write_text('{"steps": 20, "final_loss": 0.12}\n')
    (rd.path / ".hydra").mkdir()
    (rd.path / ".hydra" / "config.yaml").write_text("the finished run's config\n")
    before = {p.relative_to(rd.path): p.read_bytes() for p in rd.path.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    assert cli.main(["submit", *overrides, f"hydra.run.dir={rd.path}"]) == 2
    err = capsys.readouterr().err
    assert "(1 problem(s))" in err and "train.max_steps=20" in err, err
    assert (f"the run in {rd.path} has already reached train.max_steps (checkpoint at step 20): nothing left to "
            f"train" in err)
    assert f"hpc-ft report {rd.path}" in err and "train.max_steps=M with M > 20" in err
    assert "hydra.run.dir=NEW_DIR" in err
    assert "Traceback" not in err
    assert {p.relative_to(rd.path): p.read_bytes() for p in rd.path.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("key", ["hydra.run.dir", "++hydra.run.dir"])  # ++: Hydra's force-add sets it as well
@pytest.mark.parametrize("extra", [["train.max_steps=-1"], ["dry_run=true"]])
def test_a_named_run_dir_that_a_refused_or_dry_run_created_is_gone_with_its_new_parents(tmp_path, extra, key):
    (tmp_path / "runs").mkdir()
    res = run(["submit", "model=mlp", "data=synthetic", *extra, f"{key}={tmp_path / 'runs/new/dir'}"], tmp_path)
    assert res.returncode == (2 if "train.max_steps=-1" in extra else 0), res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["runs"] and list((tmp_path / "runs").iterdir()) == []


@pytest.mark.slow
def test_a_job_run_in_process_leaves_the_callers_logging_as_it_was(tmp_path):
    """Hydra's job logging adds a file handler on the run dir's hpc_ft.log: gone once hpc-ft returns, so the
    caller's own later records stay out of that run's log."""
    from tests.conftest import SYNTH

    run_dir = tmp_path / "run"
    code = ("import contextlib, io, logging, sys\n"
            "import hpc_ft.cli\n"
            "logging.basicConfig(level=logging.INFO, stream=sys.stderr)\n"
            "root = logging.getLogger()\n"
            "before = (list(root.handlers), root.level)\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    code = hpc_ft.cli.main(['submit', *{SYNTH!r}, 'train.max_steps=2', 'hydra.run.dir={run_dir}'])\n"
            "logging.warning('the caller speaks')\n"
            "print(code, (list(root.handlers), root.level) == before)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.stdout.split() == ["0", "True"], res.stdout + res.stderr[-3000:]
    assert (run_dir / "hpc_ft.log").exists() and "the caller speaks" not in (run_dir / "hpc_ft.log").read_text()
    assert "the caller speaks" in res.stderr  # its own handler still works


def test_bad_config_exits_with_one_clear_error(tmp_path):
    rd = tmp_path / "run"
    res = run(["submit", "resources.nodes=0", "optim.lr=-1", f"hydra.run.dir={rd}"], tmp_path)
    assert res.returncode == 2
    assert "resources.nodes=0" in res.stderr and "optim.lr=-1" in res.stderr and "Fix:" in res.stderr
    assert "Traceback" not in res.stderr + res.stdout
    # The named run dir did not exist: made by Hydra for the refused job, it is gone again (one that held an earlier
    # run keeps it: test_a_refused_resubmission_leaves_the_named_run_dirs_hydra_files_as_they_were).
    assert not rd.exists()


def test_bad_config_leaves_no_timestamped_run_dir(tmp_path):
    (tmp_path / "outputs" / "earlier").mkdir(parents=True)  # another run's: kept
    res = run(["submit", "optim.lr=-1"], tmp_path)
    assert res.returncode == 2 and "optim.lr=-1" in res.stderr
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["earlier"]
    res = run(["sbatch", "executor=slurm", "resources.nodes=0"], tmp_path / "outputs" / "earlier")
    assert res.returncode == 2 and not list((tmp_path / "outputs" / "earlier").iterdir())


def test_cfg_job_prints_composed_config(tmp_path):
    res = run(["submit", "--cfg", "job", "precision=fp32", "optim.lr=3e-5"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert "dtype: fp32" in res.stdout and "lr: 3.0e-05" in res.stdout


@pytest.mark.parametrize("override, named", [("resources.gpuz=1", "gpuz"), ("train.compile=maybe", "maybe"),
                                             ("model=nosuch", "nosuch")])
def test_overrides_hydra_refuses_exit_like_any_bad_config(tmp_path, override, named):
    res = run(["submit", override, "dry_run=true"], tmp_path)
    assert res.returncode == 2 and named in res.stderr and "Fix:" in res.stderr, res.stderr
    assert not (tmp_path / "outputs").exists()


def test_help_lists_commands(tmp_path):
    res = run(["--help"], tmp_path)
    assert res.returncode == 0 and all(c in res.stdout for c in ("submit", "sbatch", "report", "plan"))


def test_sbatch_refuses_a_value_a_batch_script_cannot_hold_before_writing(tmp_path):
    rd = tmp_path / "run%j"  # '%' would be expanded by #SBATCH --output
    res = run(["sbatch", "executor=slurm", f"hydra.run.dir={rd}"], tmp_path)
    assert res.returncode == 2 and "run.dir" in res.stderr and "Fix:" in res.stderr, res.stderr
    assert not (rd / "job.yaml").exists() and not (rd / "job.sbatch").exists()


# --- issue 10: bad input exits 2 with one message and no traceback; messages fit the mistake ---------------

def refused(res):
    out = res.stdout + res.stderr
    assert res.returncode == 2 and "Traceback" not in out, out[-3000:]
    return res.stderr


@pytest.mark.parametrize("override, words", [
    ("+train.max_step=500", ["train.max_step", "did you mean train.max_steps"]),  # 10.8: typo with '+'
    ("+resources.mem_gbs=4", ["resources.mem_gbs", "did you mean resources.mem_gb"]),
    ("++executor.preempt=USR2", ["executor.preempt", "did you mean executor.preempt_signal"]),
    ("+retries=1", ["retries", "is not a setting of hpc_ft"]),
    ("~model", ["model", "conf/model/"]),  # a required group deleted
    ("~train", ["train='~train'", "cannot be deleted"]),  # hpc_ft's own group deleted: defaults would come back silently
    # the value as written, not '' (the error itself does not carry it)
    ("optim.lr=${oc.env:HPC_FT_NO_SUCH_VAR}", ["optim.lr='${oc.env:HPC_FT_NO_SUCH_VAR}'", "oc.env:NAME,default"]),
    ("optim.lr=${no_such.key}", ["optim.lr='${no_such.key}'", "refer to a key the job has"]),
    ("hydra.run.dir=${oc.env:HPC_FT_NO_SUCH_VAR}", ["hydra.run.dir", "HPC_FT_NO_SUCH_VAR"]),
    # an optimizer argument added with '+' is checked against the optimizer's signature, not left to the workers
    ("+optim.lrr=1e-5", ["optim.lrr=1e-05: is not an argument of torch.optim.AdamW", "did you mean optim.lr?"]),
    ("optim._target_=torch.optim.RAdam", ["optim.fused=True: is not an argument of torch.optim.RAdam", "~optim.fused"]),
    ("optim._target_=torch.optim.NoSuch", ["optim._target_='torch.optim.NoSuch': does not name an optimizer class"]),
])
def test_unknown_added_deleted_and_unresolvable_keys_are_refused(tmp_path, override, words):
    err = refused(run(["submit", "model=mlp", "data=synthetic", override, "dry_run=true"], tmp_path,
                      env={k: v for k, v in __import__("os").environ.items() if k != "HPC_FT_NO_SUCH_VAR"}))
    assert all(w in err for w in words), err
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("override", ["+optim.betas=[0.8,0.95]", "+optim.amsgrad=true"])
def test_an_argument_the_optimizer_takes_is_accepted(tmp_path, override):
    res = run(["submit", "model=mlp", "data=synthetic", override, "dry_run=true"], tmp_path)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("override, words", [
    ("+train.max_step=500", ["did you mean train.max_steps"]),
    ("~train", ["cannot be deleted"]),
    ("optim.lr=${oc.env:HPC_FT_NO_SUCH_VAR}", ["optim.lr", "HPC_FT_NO_SUCH_VAR"]),
    ("+optim.lrr=1e-5", ["is not an argument of torch.optim.AdamW"]),
    # refused by Hydra itself, after the sweep dir was made: it goes too
    ("optim.lrr=1e-5", ["Could not override 'optim.lrr'", "did you mean"]),
])
def test_sweeps_refuse_the_same_keys(tmp_path, override, words):
    err = refused(run(["submit", "-m", "model=mlp", "data=synthetic", override, "train.seed=1,2", "dry_run=true"],
                      tmp_path))
    assert all(w in err for w in words) and "Fix:" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("cmd", ["submit", "sbatch"])
@pytest.mark.parametrize("override, fix", [
    ("run.name=a(b)", """'run.name="a(b)"'"""),  # 10.9: Hydra syntax in a value: quote it for Hydra
    ("hydra.run.dir=/tmp/x(y)", """'hydra.run.dir="/tmp/x(y)"'"""),  # Hydra's own keys too
    ("executor.setup=a,b", """'executor.setup="a,b"'"""),  # a comma would make it a sweep
    ("executor.env.HF_HOME=/tmp/hf", "+executor.env.HF_HOME=/tmp/hf"),  # own names are added with '+'
    ("resources.gpuz=1", "resources has: nodes, gpus_per_node"),
    ("train.compile=maybe", "train.compile takes true or false"),
    ("model=mpl", "minilm, mlp; did you mean"),
    ("optim.lrr=0.1", "optim=adamw has no 'lrr'; did you mean hpc-ft"),  # a typo in a group of the user's own
    ("optim.nesterov=true", "optim=adamw has: _target_, fused, lr, weight_decay; a new key is added with '+'"),
])
def test_hydra_refusal_gives_the_fix_for_that_mistake_and_command(tmp_path, cmd, override, fix):
    err = refused(run([cmd, override, "dry_run=true"], tmp_path))
    fix_line = next(line for line in err.splitlines() if line.startswith("Fix:"))
    assert fix in fix_line, fix_line
    assert f"hpc-ft {cmd}" in fix_line and f"hpc-ft {'sbatch' if cmd == 'submit' else 'submit'}" not in fix_line


@pytest.mark.parametrize("cmd", ["submit", "plan"])
@pytest.mark.parametrize("override, fix", [
    # each value of a sweep is checked: the Fix names the bad one and keeps the sweep with the rest
    ("train.max_steps=10,abc", "train.max_steps takes a whole number; 'abc' in the sweep is not; did you mean "
                               "hpc-ft {cmd} -m train.max_steps=10"),
    ("model=minilm,mlpp", "mlpp in the sweep is not one; did you mean hpc-ft {cmd} -m model=minilm,mlp"),
    ("precision=bf16,fp8", "fp8 in the sweep is not one; did you mean hpc-ft {cmd} -m precision=bf16"),
    ("train.max_steps=a,b", "'a', 'b' in the sweep are not"),  # nothing left to keep: no command
])
def test_a_sweeps_bad_value_gets_a_fix_that_keeps_the_sweep(tmp_path, cmd, override, fix):
    extra = ["dry_run=true"] if cmd == "submit" else ["--no-queue"]
    err = refused(run([cmd, "-m", override, *extra], tmp_path))
    fix_line = next(line for line in err.splitlines() if line.startswith("Fix:"))
    assert fix.format(cmd=cmd) in fix_line, err
    # one error: Hydra's first paragraph, not its list of options and config search path (the Fix names them)
    assert "Config search path" not in err and "Available options" not in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["submit", "model=mlp", "dry_run=true"],
                                  ["plan", "-m", "model=mlp,minilm", "--no-queue"]], ids=["submit", "plan"])
def test_a_model_reading_a_key_the_chosen_data_lacks_names_the_option_that_has_it(tmp_path, args):
    """model=mlp takes ${data.num_features}; the default data (chatterbot) has none: the Fix names data=synthetic."""
    err = refused(run(args, tmp_path))
    assert "model.num_features reads data.num_features, which only data=synthetic sets" in err, err
    assert list(tmp_path.iterdir()) == []


def test_sbatch_prints_a_pasteable_command_for_any_run_dir(tmp_path):
    import shlex

    rd = tmp_path / "D01 log(kd)=-1...1"
    res = run(["sbatch", "executor=slurm", f"hydra.run.dir='{rd}'"], tmp_path)
    assert res.returncode == 0, res.stderr
    line = next(x for x in res.stdout.splitlines() if x.startswith("submit it with: "))
    assert shlex.split(line.removeprefix("submit it with: ")) == ["sbatch", str(rd / "job.sbatch")]


@pytest.mark.parametrize("cmd", ["submit", "sbatch", "report", "plan"])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_answers_help(tmp_path, cmd, flag):
    res = run([cmd, flag], tmp_path)
    assert res.returncode == 0, res.stderr
    assert f"hpc-ft {cmd}" in res.stdout and "usage" in res.stdout.lower()
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("args", [["dry_run=true"], ["-m", "optim.lr=1e-5,3e-5", "dry_run=true"]],
                         ids=["run", "sweep"])
def test_dry_run_leaves_nothing_behind(tmp_path, args):
    # issue 10.14: no outputs/DATE/TIME/ (or multirun/DATE/TIME/) per call
    for _ in range(2):
        res = run(["submit", *args], tmp_path)
        assert res.returncode == 0, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_refused_sweep_job_leaves_nothing_behind(tmp_path):
    res = run(["submit", "-m", "optim.lr=1e-5,-1", "dry_run=true"], tmp_path)
    assert res.returncode == 2 and "optim.lr=-1" in res.stderr, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_single_run_composes_the_config_once_and_a_sweep_still_runs(tmp_path, monkeypatch, capsys):
    # Hydra's main composes once just to read hydra.mode, then again to run: half of a dry run's cold start.
    from hydra._internal.hydra import Hydra

    from hpc_ft import cli

    calls = []
    original = Hydra.compose_config
    monkeypatch.setattr(Hydra, "compose_config", lambda self, *a, **kw: calls.append(1) or original(self, *a, **kw))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["submit", "dry_run=true"]) == 0
    assert len(calls) == 1
    assert Hydra.get_mode is not None and "single run" not in repr(Hydra.get_mode)  # restored
    calls.clear()
    assert cli.main(["submit", "-m", "dry_run=true", "train.seed=1,2"]) == 0
    out = capsys.readouterr().out
    assert out.count('"seed": 1') + out.count('"seed": 2') >= 1 or "seed" in out


# --- issue 11.5: names from the field; the old names are refused naming the new ones ------------------------

@pytest.mark.parametrize("cmd", ["submit", "sbatch", "plan"])
@pytest.mark.parametrize("args, words", [
    (["train.batch_size=32"], ["train.batch_size=32: was renamed train.global_batch_size",
                               "Fix: pass train.global_batch_size=32"]),
    (["+train.eval_batch_size=8"], ["train.eval_batch_size=8: was renamed train.eval_micro_batch_size",
                                    "Fix: pass train.eval_micro_batch_size=8"]),
    (["-m", "train.batch_size=16,32"], ["was renamed train.global_batch_size",
                                        "Fix: pass train.global_batch_size=16,32"]),
])
def test_renamed_key_is_refused_naming_the_new_key(tmp_path, cmd, args, words):
    err = refused(run([cmd, *args, "dry_run=true"], tmp_path))
    assert all(w in err for w in words), err
    assert "not in 'TrainConf'" not in err and "did you mean" not in err  # the rename, not Hydra's generic refusal
    assert list(tmp_path.iterdir()) == []


def test_renamed_key_in_a_users_config_file_is_refused_naming_the_new_key(tmp_path):
    own = tmp_path / "my_conf" / "train"
    own.mkdir(parents=True)
    (own / "old.yaml").write_text("max_steps: 5\nbatch_size: 32\n")
    work = tmp_path / "work"
    work.mkdir()
    err = refused(run(["submit", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "train=old", "dry_run=true"],
                      work))
    assert "train.batch_size" in err and "was renamed train.global_batch_size" in err, err
    assert "write global_batch_size: instead of batch_size:" in err
    assert "Fix: train options are" not in err  # the generic fix for a group option is not given
    assert list(work.iterdir()) == []


def test_dry_run_shows_the_global_batch_and_the_micro_batch_per_worker(tmp_path):
    res = run(["submit", "dry_run=true", "resources.nodes=2", "train.global_batch_size=32", "train.grad_accum_steps=2",
               "train.eval_micro_batch_size=8"], tmp_path)
    assert res.returncode == 0, res.stderr
    train = json.loads(res.stdout)["train"]
    assert train["global_batch_size"] == 32 and train["grad_accum_steps"] == 2
    assert train["micro_batch_per_worker"] == 4  # 32 / (2 nodes x 2 workers x 2 accumulation steps)
    assert train["eval_micro_batch_size"] == 8


def test_an_in_process_dry_run_leaves_no_log_handler_on_its_removed_run_dir(tmp_path, monkeypatch):
    # Hydra's <job>.log handler stayed on the root logger after the dry run removed its dir: every later log
    # record of the process failed (FileNotFoundError), e.g. the telemetry sampler's notices in a test run after.
    import logging
    from pathlib import Path

    from hpc_ft import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["submit", "dry_run=true"]) == 0
    assert not (tmp_path / "outputs").exists()
    files = [Path(h.baseFilename) for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
             for h in getattr(lg, "handlers", []) if getattr(h, "baseFilename", None)]
    assert not [f for f in files if tmp_path in f.parents]
    logging.getLogger("hpc_ft.telemetry.sampler").warning("still logs")


def test_cfg_job_resolve_prints_the_resolved_job_without_a_traceback(tmp_path, run_cli):
    """``--cfg job --resolve`` resolves every key; run.dir (Hydra's runtime output dir, which exists only once a
    job starts) is shown as what it will be, and no directory is made."""
    res = run_cli("submit", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "${" not in res.stdout
    assert "dir: <hydra.run.dir, made when the job starts>" in res.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", [["--cfg", "all", "--resolve"], ["optim.lr=1e-4", "--info"]],
                         ids=["all-resolved", "info"])
def test_printing_the_config_makes_no_run_or_sweep_dir(tmp_path, run_cli, args):
    """Hydra resolves hydra.run.dir and hydra.sweep.dir to print them; their resolver (hpc_ft.config.fresh_dir)
    creates the directory. Printing shows the timestamped paths and makes nothing."""
    res = run_cli("submit", *args, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    if "--resolve" in args:
        assert "dir: outputs/20" in res.stdout and "dir: multirun/20" in res.stdout, res.stdout
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_and_a_config_print_at_once_is_refused_without_a_traceback(tmp_path, run_cli):
    res = run_cli("submit", "-m", "--cfg", "job", "optim.lr=1e-5,3e-5", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "Only one of --run, --multirun, --cfg" in res.stderr and "Fix: drop one" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_every_problem_at_once_includes_the_data_checks(tmp_path, run_cli):
    # The data checks need a resolved job; they ran only once validation passed, so a bad data.test_fraction
    # showed up on the second try. Now both come in one error (the README's "every problem at once").
    res = run_cli("submit", "optim.lr=-1", "data.test_fraction=1.5", "resources.nodes=0", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "(3 problem(s))" in res.stderr, res.stderr
    assert "optim.lr=-1" in res.stderr and "data.test_fraction=1.5" in res.stderr and "resources.nodes=0" in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_key_hydra_cannot_apply_is_one_error_without_hydras_hints(tmp_path, run_cli):
    # Hydra's page (the '+key' hint hpc_ft refuses, HYDRA_FULL_ERROR, OmegaConf's type lines, the search path)
    # becomes one error line with its reason, then hpc_ft's Fix.
    res = run_cli("submit", "train.max_step=5", cwd=tmp_path)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert lines[0] == "error: Could not override 'train.max_step'." and "not in 'TrainConf'" in lines[1]
    assert lines[-1].startswith("Fix: train.max_step is not a setting; did you mean")
    assert len(lines) == 3, res.stderr
    for noise in ("To append", "HYDRA_FULL_ERROR", "full_key", "Config search path"):
        assert noise not in res.stderr
    res = run_cli("submit", "precision=bf17", cwd=tmp_path)
    assert res.returncode == 2 and res.stderr.strip().splitlines()[0] == (
        "error: In 'config': Could not find 'precision/bf17'") and "Config search path" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_while_waiting_for_a_schedulers_job_leaves_it_running_and_says_how_to_follow_it(tmp_path):
    """executor=slurm: the job is the cluster's, not the terminal's; hpc-ft stops waiting and the job keeps its run
    dir (the local executor's Ctrl-C: tests/integration/test_preempted_run.py)."""
    import io

    from rich.console import Console

    from hpc_ft.cli import _stop_on_interrupt
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.submit.executors import resolve

    spec = resolve(compose_conf(["executor=slurm", "model=mlp", "data=synthetic"], run_dir=tmp_path / "r1"), [])

    class Job:
        job_id = "4242"

    class Lock:
        detached = False

        def detach(self):
            self.detached = True

    out, lock = io.StringIO(), Lock()
    assert _stop_on_interrupt(Job(), spec, Console(file=out, width=300), lock) is False
    text = out.getvalue()
    assert lock.detached and "not waiting; job 4242 goes on" in text
    assert f"hpc-ft cancel {tmp_path / 'r1'}" in text, text


@pytest.mark.parametrize("columns, width", [("250", 250), ("", 120), ("wide", 120), ("80", 120)])
def test_piped_tables_take_the_width_columns_gives(monkeypatch, columns, width):
    """A piped or redirected report is 120 columns wide unless COLUMNS asks for more (a sweep's override column was
    cut at 120 whatever the user asked); never narrower, which would wrap run dirs meant to be pasted."""
    from hpc_ft.terminal import console

    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    assert console().width == width


# --- Hydra's options anywhere on the command line ------------------------------------------------------------

def test_options_after_the_overrides_are_taken_as_before_them(tmp_path):
    """argparse takes Hydra's options only before the overrides; hpc-ft moves them there (a bare --info last)."""
    mine = tmp_path / "myconf" / "train"
    mine.mkdir(parents=True)
    (mine / "mine.yaml").write_text("defaults:\n  - default\n  - _self_\nmax_steps: 11\n")
    res = run(["submit", "dry_run=true", "model=mlp", "data=synthetic", "--config-dir", str(tmp_path / "myconf"),
               "train=mine"], tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["train"]["max_steps"] == 11
    res = run(["submit", "train.max_steps=3", "--cfg", "job"], tmp_path)
    assert res.returncode == 0 and "max_steps: 3" in res.stdout, res.stderr
    for args in (["train.max_steps=3", "--info"], ["--info", "train.max_steps=3"]):
        res = run(["submit", *args], tmp_path)
        assert res.returncode == 0 and "Hydra 1.3" in res.stdout, (args, res.stderr)
    res = run(["submit", "train.max_steps=3", "--info", "searchpath"], tmp_path)
    assert res.returncode == 0 and "Config search path" in res.stdout, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["myconf"]  # no run dir made by any of them
