"""`hpc-ft sbatch`: the rendered script is pinned, shellcheck-clean, and hostile values never run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hpc_ft.errors import ConfigError
from hpc_ft.submit.sbatch import render_sbatch, write_sbatch
from hpc_ft.submit.slurm import sbatch_options, slurm_parameters

GOLDEN = Path(__file__).parent / "golden" / "job.sbatch"
REGEN = "HPC_FT_REGEN_GOLDEN=1 .venv/bin/python -m pytest -q tests/submit/test_sbatch.py"
PYTHON = "/opt/hpc_ft/venv/bin/python"

# Each tries to create a file named CANARY* in the working directory if anything evaluates it.
HOSTILE = {
    "SUBST": "$(touch CANARY_subst)",
    "BACKTICK": "`touch CANARY_backtick`",
    "SQUOTE": "'; touch CANARY_squote; '",
    "DQUOTE": '"$(touch CANARY_dquote)"',
    "NEWLINE": "a\ntouch CANARY_newline\nb",
    "SPACES": "  two  spaces ; touch CANARY_semicolon  ",
    "GLOB": "* ? [a] ~ $HOME ${HOME} \\",
}


def golden_spec(make_spec):
    return make_spec("/scratch/hpc_ft/run-1", "resources.nodes=2", "resources.gpus_per_node=4",
                     "resources.gpu_type=a100", "resources.partition=gpu", "resources.account=proj42",
                     "resources.qos=normal", "resources.constraint='a100&ib'", "resources.mem_gb=64",
                     "resources.cpus_per_task=16", "resources.timeout_min=240", "train.global_batch_size=32",
                     env={"HF_HOME": "/scratch/hf cache", "TAG": "it's $HOME"},
                     setup=["module load cuda/12.4", "source /opt/hpc_ft/venv/bin/activate"],
                     extra_sbatch={"mail-type": "END", "exclusive": True, "hint": False}, name="finetune-1")


def test_rendered_script_matches_golden_file(make_spec):
    text = render_sbatch(golden_spec(make_spec), python=PYTHON)
    if os.environ.get("HPC_FT_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(text)
    assert GOLDEN.exists(), f"golden file missing; create it with: {REGEN}"
    assert text == GOLDEN.read_text(), (
        f"the rendered sbatch script differs from {GOLDEN}. If the change is intended, regenerate it with:\n"
        f"  {REGEN}\nand review the change with: git diff {GOLDEN}")


def test_script_shape(make_spec):
    text = render_sbatch(golden_spec(make_spec), python=PYTHON)
    lines = text.splitlines()
    assert lines[0] == "#!/bin/bash"
    code = [ln for ln in lines[1:] if ln.strip() and not ln.startswith("#")]
    assert code[0] == "set -euo pipefail"  # the first command, right after the #SBATCH block
    assert code[-1] == f"srun --ntasks-per-node=1 {PYTHON} -m hpc_ft.node.entry /scratch/hpc_ft/run-1/job.yaml"
    directives = [ln for ln in lines if ln.startswith("#SBATCH ")]
    assert lines.index(directives[-1]) < lines.index("set -euo pipefail")
    for want in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=a100:4", "--cpus-per-task=16",
                 "--mem=65536M", "--time=240", "--partition=gpu", "--account=proj42", "--qos=normal",
                 "--constraint='a100&ib'", "--signal=USR2@120", "--requeue", "--exclusive", "--mail-type=END",
                 "--output=/scratch/hpc_ft/run-1/slurm-%j.out", "--open-mode=append", "--job-name=finetune-1"):
        assert f"#SBATCH {want}" in directives
    assert not any("hint" in d for d in directives)  # false flags are left out
    assert 'export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"' in lines
    assert "module load cuda/12.4" in lines  # setup lines are the user's shell, as written


def test_same_resources_as_the_submitit_path(make_spec):
    spec = golden_spec(make_spec)
    params = slurm_parameters(spec)
    opts = sbatch_options(spec)
    assert params["nodes"] == opts["nodes"] == 2 and params["ntasks_per_node"] == opts["ntasks-per-node"] == 1
    assert params["gpus_per_node"] == opts["gpus-per-node"] == "a100:4"
    assert params["mem"] == opts["mem"] and params["time"] == opts["time"]
    assert params["cpus_per_task"] == opts["cpus-per-task"]
    assert {k: params[k] for k in ("partition", "account", "qos", "constraint")} == \
        {k: opts[k] for k in ("partition", "account", "qos", "constraint")}
    assert params["additional_parameters"] == {"requeue": True, "mail-type": "END", "exclusive": True}
    assert 'export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"' in params["setup"]


@pytest.mark.parametrize("variant", ["golden", "minimal", "hostile", "cpu-one-node"])
def test_every_rendered_script_passes_shellcheck(make_spec, shellcheck, tmp_path, variant):
    if variant == "golden":
        spec = golden_spec(make_spec)
    elif variant == "minimal":
        spec = make_spec(tmp_path / "run")
    elif variant == "hostile":
        spec = make_spec(tmp_path / "run $(touch CANARY) 'q'", env=HOSTILE, setup=["echo hi"])
    else:
        spec = make_spec(tmp_path / "run", "resources.nodes=1", "executor.preempt_signal=TERM")
    path = tmp_path / "job.sbatch"
    path.write_text(render_sbatch(spec, python=PYTHON))
    proc = subprocess.run([shellcheck, "--shell=bash", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout


def _fake_srun(bindir: Path) -> None:
    """An `srun` that records its argv and environment (NUL-separated) instead of launching anything."""
    bindir.mkdir()
    srun = bindir / "srun"
    srun.write_text('#!/bin/sh\nprintf "%s\\0" "$@" > "$RECORD_DIR/argv"\nenv -0 > "$RECORD_DIR/env"\n')
    srun.chmod(0o755)


def test_canary_in_values_never_runs(make_spec, tmp_path):
    """Run the whole rendered script with bash (srun replaced by a recorder): nothing hidden in a value runs,
    and every value arrives byte for byte."""
    work = tmp_path / "work"
    work.mkdir()
    run_dir = tmp_path / "run $(touch CANARY_dir) `touch CANARY_dir2` 'q' \"d\""
    # The python path is hostile too: a symlink whose name carries a command substitution.
    py = tmp_path / "py $(touch CANARY_py)"
    py.symlink_to(sys.executable)
    spec = make_spec(run_dir, env=HOSTILE)
    script = tmp_path / "job.sbatch"
    write_sbatch(spec, script, python=str(py))
    _fake_srun(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "RECORD_DIR": str(tmp_path), "HOME": str(tmp_path),
           "SLURM_CPUS_PER_TASK": "3"}
    proc = subprocess.run(["bash", str(script)], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not [p for p in tmp_path.rglob("CANARY*")], "a canary command ran"
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    assert argv == ["--ntasks-per-node=1", str(py), "-m", "hpc_ft.node.entry", str(spec.spec_path)]
    seen = dict(item.split("=", 1) for item in (tmp_path / "env").read_text().split("\0") if "=" in item)
    for key, value in HOSTILE.items():
        assert seen[key] == value, key
    assert seen["SRUN_CPUS_PER_TASK"] == "3"


def test_hostile_values_through_the_cli_never_run(run_cli, tmp_path):
    """Hydra-quoted hostile values from the command line end up quoted in the script, not executed."""
    run_dir = tmp_path / "run"
    res = run_cli("sbatch", "executor=slurm", "model=mlp", "data=synthetic",
                  "+executor.env.EVIL='$(touch CANARY_cli) `touch CANARY_cli2`'", f"hydra.run.dir={run_dir}",
                  cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    script = run_dir / "job.sbatch"
    assert f"wrote {script}" in res.stdout and os.access(script, os.X_OK)
    assert (run_dir / "job.yaml").exists()
    assert "export EVIL='$(touch CANARY_cli) `touch CANARY_cli2`'" in script.read_text()
    _fake_srun(tmp_path / "bin")
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "RECORD_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not list(tmp_path.rglob("CANARY*"))


@pytest.mark.parametrize("edit, key, rule", [
    ({"name": "bad\nname"}, "run.name", "newline"),
    ({"partition": "gpu\nx"}, "resources.partition", "newline"),
    ({"extra_sbatch": {"comment": "one\ntwo"}}, "executor.extra_sbatch.comment", "newline"),
    ({"extra_sbatch": {"--comment": "x"}}, "executor.extra_sbatch.--comment", "option name"),
    ({"extra_sbatch": {"nodes": 3}}, "executor.extra_sbatch.nodes", "sets this option"),
    ({"env": {"BAD-NAME": "x"}}, "executor.env.BAD-NAME", "variable name"),
    ({"env": {"1ST": "x"}}, "executor.env.1ST", "variable name"),
    ({"env": {"A B": "x"}}, "executor.env.A B", "variable name"),
    ({"run_dir": "/tmp/run\nx"}, "run.dir", "one line"),
    ({"run_dir": "/tmp/run%j"}, "run.dir", "'%'"),
])
def test_unsafe_values_are_rejected_naming_key_rule_and_fix(make_spec, tmp_path, edit, key, rule):
    spec = make_spec(edit.get("run_dir", tmp_path / "run"), env=edit.get("env"), partition=edit.get("partition"),
                     extra_sbatch=edit.get("extra_sbatch"), name=edit.get("name"))
    with pytest.raises(ConfigError) as info:
        render_sbatch(spec, python=PYTHON)
    (problem,) = [p for p in info.value.problems if p.key == key]
    assert rule in problem.rule and problem.fix
    with pytest.raises(ConfigError):  # the submitit path refuses the same values
        slurm_parameters(spec)


def test_write_is_atomic_and_executable(make_spec, tmp_path):
    spec = make_spec(tmp_path / "run")
    path = tmp_path / "out" / "job.sbatch"
    path.parent.mkdir()
    path.write_text("old")
    write_sbatch(spec, path, python=PYTHON)
    assert path.read_text() == render_sbatch(spec, python=PYTHON, script_path=path)
    assert os.access(path, os.X_OK)
    assert [p.name for p in path.parent.iterdir()] == ["job.sbatch"]  # no temp file left behind


def test_rejected_spec_leaves_an_existing_script_untouched(make_spec, tmp_path):
    path = tmp_path / "job.sbatch"
    path.write_text("keep me")
    with pytest.raises(ConfigError):
        write_sbatch(make_spec(tmp_path / "run", env={"BAD-NAME": "x"}), path)
    assert path.read_text() == "keep me"


def test_rendering_does_not_import_torch(tmp_path):
    code = ("import sys; from hpc_ft.config.compose import compose_conf; from hpc_ft.job import resolve; "
            "from hpc_ft.submit.sbatch import render_sbatch; "
            f"render_sbatch(resolve(compose_conf(['executor=slurm'], run_dir={str(tmp_path)!r}))); "
            "print(json.dumps('torch' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) is False


def test_quoting_round_trips_through_the_shell(make_spec, tmp_path):
    """shlex.split of every export line gives back exactly NAME=value (what bash sees)."""
    spec = make_spec(tmp_path / "run", env=HOSTILE)
    text = render_sbatch(spec, python=PYTHON)
    got = {}
    for key in HOSTILE:
        start = text.index(f"export {key}=")
        end = text.index("\nexport ", start + 1)
        (word,) = shlex.split(text[start + len("export "):end])
        name, value = word.split("=", 1)
        got[name] = value
    assert got == HOSTILE
