"""What torchrun starts on a node: hpc_ft's own loop, or a user's own script (``script.path`` / ``script.module``).

Everything around it (rendezvous, telemetry, preemption, node reports) is the node task's and the same for both;
this module owns only what differs: the worker command, the contract's environment (hpc_ft.script_api), the
training result of a script (from its progress file) and the debug executor's in-process run of a script.
"""

from __future__ import annotations

import os
import runpy
import socket
import sys
import traceback
from pathlib import Path

from hpc_ft.errors import PREEMPTED_EXIT_CODE
from hpc_ft.job import JobSpec
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.progress import progress_result, read_progress
from hpc_ft.rundir.records import TrainResult
from hpc_ft.rundir.spec import spec_path

# The contract's environment variables (hpc_ft.script_api reads them; it imports nothing of hpc_ft).
RUN_DIR_ENV = "HPC_FT_RUN_DIR"
PROGRESS_ENV = "HPC_FT_PROGRESS_FILE"


def is_script(spec: JobSpec) -> bool:
    """The job runs a user's script rather than hpc_ft's loop (``JobSpec.runs_script``)."""
    return spec.runs_script


def worker_command(spec: JobSpec) -> list[str]:
    """What follows torchrun's own options: the script (or ``-m module``) and its arguments, or hpc_ft's loop."""
    s = spec.conf.script
    if s.path:
        return [str(s.path), *[str(a) for a in s.args]]
    if s.module:
        return ["-m", str(s.module), *[str(a) for a in s.args]]
    return ["-m", "hpc_ft.train", str(spec_path(spec))]


def contract_env(spec: JobSpec) -> dict[str, str]:
    """The environment of the contract (hpc_ft.script_api): where the run dir and the progress file are."""
    rd = RunDir.of(spec)
    return {RUN_DIR_ENV: str(rd.path), PROGRESS_ENV: str(rd.progress)}


def script_result(spec: JobSpec, *, since_unix_s: float, wall_s: float, exit_code: int) -> TrainResult | None:
    """A script's training result for this attempt from its progress file; None when it reported no progress.

    ``exit_code`` of the worker (or torchrun): the requeue exit status marks the result preempted.
    """
    return progress_result(read_progress(RunDir.of(spec).progress), since_unix_s=since_unix_s,
                           world_size=spec.world_size, wall_s=wall_s,
                           requeue_asked=exit_code == PREEMPTED_EXIT_CODE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script_in_process(spec: JobSpec) -> tuple[int, str]:
    """The debug executor's run of a script: in this process (pdb and breakpoints work) as rank 0 of a world of
    size 1, with torchrun's variables and the contract's set. Returns the exit status and, on an error, its
    traceback (the report's error tail). The caller sets RANK/WORLD_SIZE and restores the environment."""
    s = spec.conf.script
    env = {**contract_env(spec), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    saved_env = {k: os.environ.get(k) for k in env}
    saved_argv, saved_path = list(sys.argv), list(sys.path)
    os.environ.update(env)
    try:
        if s.path:
            sys.argv = [str(s.path), *map(str, s.args)]
            sys.path.insert(0, str(Path(s.path).parent))  # as `python script.py` would
            runpy.run_path(str(s.path), run_name="__main__")
        else:
            sys.argv = [str(s.module), *map(str, s.args)]
            runpy.run_module(str(s.module), run_name="__main__", alter_sys=True)
        return 0, ""
    except SystemExit as exc:
        code = exc.code
        if code is None:
            return 0, ""
        if isinstance(code, int):
            return code, ""
        return 1, f"{code}\n"  # sys.exit("message"): Python prints it and exits 1
    except Exception:  # the script's own error: reported like a worker's, not raised into the submitter
        tb = traceback.format_exc()
        sys.stderr.write(tb)
        return 1, tb
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

