"""The node task's job process (hpc_ft.node.submitit_job): submitit's process_job, started without numpy."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import textwrap

import pytest

from hpc_ft.node.submitit_job import SUBMITIT_ARGS, folder_from_argv, node_job_python


def test_the_folder_is_what_submitit_appends_to_its_python_command():
    assert folder_from_argv([*SUBMITIT_ARGS, "/runs/a b/submitit"]) == "/runs/a b/submitit"
    assert folder_from_argv(["/runs/x/submitit"]) == "/runs/x/submitit"


@pytest.mark.parametrize("argv", [[], ["-m", "submitit.core._submit", "F"], [*SUBMITIT_ARGS, "F", "G"], ["-u"]])
def test_another_command_shape_is_refused_not_guessed(argv):
    with pytest.raises(SystemExit, match="expected '-u -m submitit.core._submit FOLDER'"):
        folder_from_argv(argv)


def test_the_python_command_quotes_the_interpreter_once_as_submitit_does():
    cmd = node_job_python("/opt/my env/bin/python")
    # submitit's local controller splits its command with shlex; Slurm's script runs it through the shell
    assert shlex.split(f"{cmd} -u -m submitit.core._submit /f") == [
        "/opt/my env/bin/python", "-u", "-m", "hpc_ft.node.submitit_job", *SUBMITIT_ARGS, "/f"]


def test_numpy_stays_importable_in_the_job_after_submitit_is_loaded():
    """The block covers submitit's own guarded import only: a job that needs numpy imports it as usual."""
    code = textwrap.dedent("""
        import sys
        from hpc_ft.node import submitit_job
        submitit_job._process_job_without_numpy_first()
        before = "numpy" in sys.modules
        import numpy
        print(before, sys.modules["numpy"] is numpy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]


PROBE = """
import json, os
from pathlib import Path


def parent(pid):
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


agent = os.getppid()  # torchrun's agent; its parent is the node task's job process
job = parent(agent)
Path(os.environ["HPC_FT_RUN_DIR"], "job_process.json").write_text(json.dumps({
    "cmdline": Path(f"/proc/{job}/cmdline").read_bytes().decode().split("\\0"),
    "maps": Path(f"/proc/{job}/maps").read_text(),
}))
"""


@pytest.mark.slow
def test_a_local_node_tasks_job_process_has_not_loaded_numpy(tmp_path, run_cli):
    """submitit's own entry imports numpy before it unpickles a job (60-80 ms before torchrun can start); the node
    task's process starts torchrun without it, through the same submitit job machinery (its job command)."""
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    run = tmp_path / "run"
    res = run_cli("submit", f"script.path={script}", "resources.workers_per_node=1", "telemetry=off",
                  f"hydra.run.dir={run}")
    assert res.returncode == 0, res.stdout + res.stderr
    seen = json.loads((run / "job_process.json").read_text())
    assert "numpy" not in seen["maps"], "the job process loaded numpy's extension modules"
    assert seen["cmdline"][1:7] == ["-u", "-m", "hpc_ft.node.submitit_job", *SUBMITIT_ARGS], seen["cmdline"]
