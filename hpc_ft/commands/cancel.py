"""`hpc-ft cancel RUN_DIR|SWEEP_DIR [--yes]`: stop a job (or every job of a sweep); the run dir stays.

Slurm: ``scancel`` of the job; of one run dir of a job array (a sweep's, a search's or a Hydra app's job) that
array task alone, of a sweep dir its whole job arrays. Local executor: SIGTERM to each node's torchrun process
group: the workers finish their step, checkpoint and exit, as on a preemption (without a torchrun yet, to
submitit's local controller, which forwards it); anything still alive after the grace period is killed. A local
pid is signalled only when the run dir's owner record says that very job is the local executor's on this host
(``local_pid``): a job id the records do not tie to a local process is never taken for one. A user's script
checkpoints only if it keeps hpc_ft.script_api's contract; otherwise it dies of the signal. Either way nothing in
the run dir is removed: ``hpc-ft submit --from RUN_DIR hydra.run.dir=RUN_DIR`` (the run's own overrides, from its
job.yaml, into the same dir; printed for each run dir cancelled) resumes from the newest checkpoint. Each run dir
records the job cancelled (``CancelRecord``), so ``hpc-ft status`` says CANCELLED without asking Slurm. Asks for
confirmation unless ``--yes``; without a terminal to ask on, ``--yes`` is required.
"""

from __future__ import annotations

import argparse
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from hpc_ft.commands.runstate import RunState, is_sweep_dir, run_state, sweep_states, where_text
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.lock import PROCESS, SLURM_JOB, RunDirLock, detached_job_alive
from hpc_ft.rundir.records import CancelRecord

EXIT_BAD_INPUT = 2
GRACE_S = 60.0  # local: how long the workers get to checkpoint before what is left is killed


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpc-ft cancel", description=__doc__.split("\n\n")[0])
    p.add_argument("path", help="a run dir or a sweep dir")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--grace-s", type=float, default=GRACE_S,
                   help=f"local executor: seconds the workers get to checkpoint (default {GRACE_S:g})")
    return p


def cancel_local(job_id: str, grace_s: float, checkpoints: bool = True) -> str:
    """Stop the local job whose submitit controller has pid ``job_id`` (hpc_ft.submit.executors.local, which
    Ctrl-C on a waiting `hpc-ft submit` uses too); returns what was done. ``checkpoints=False``: a user's script,
    whose checkpoint is not promised."""
    from hpc_ft.submit.executors.local import stop_local_jobs

    return stop_local_jobs([int(job_id)], grace_s, checkpoints=checkpoints)[0]


SLURM_ID = re.compile(r"\d+(_\d+)?")  # a job, or one task of a job array: what scancel is given


def local_pid(st: RunState) -> int | None:
    """The pid of the submitit controller of ``st``'s job, to signal: only when the run dir's owner record says
    that very job (``st.job_id``) is a local process (the local executor's liveness probe) of job.yaml's executor,
    submitted from this host, and alive with the start time recorded (a reused pid is another process). None
    otherwise: a Slurm id, an id from a node report or a sweep's manifest, another host's or an ended job's."""
    if st.probe != PROCESS or not st.job_id or not st.job_id.isdigit():
        return None
    owner = RunDirLock(st.run_dir).read_owner()
    if (owner is None or owner.job_id != st.job_id or owner.liveness != PROCESS
            or owner.host != socket.gethostname()
            or (st.spec is not None and owner.executor != st.spec.executor)):
        return None
    return int(st.job_id) if detached_job_alive(owner) else None


def runs_script(st: RunState) -> bool:
    """The run's job runs a user's script (its job.yaml has no train.max_steps of hpc_ft's loop)."""
    return st.spec is not None and st.spec.max_steps is None


def record_cancel(st: RunState) -> Path:
    """Write the run dir's CancelRecord for ``st``'s job (atomically); returns its path."""
    rd = RunDir(st.run_dir)
    owner = RunDirLock(rd.path).read_owner()
    submitted = owner.started_unix_s if owner is not None and owner.job_id == st.job_id else None
    CancelRecord(job_id=str(st.job_id), submitted_unix_s=submitted, cancelled_unix_s=time.time()).save(
        rd.cancel_record)
    return rd.cancel_record


def cancel_slurm(job_ids: list[str]) -> str:
    """``scancel`` the job ids (``ARRAY_TASK`` one task, an array's id every task); raises RuntimeError when scancel
    fails."""
    proc = subprocess.run(["scancel", *job_ids], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"scancel {' '.join(map(shlex.quote, job_ids))} failed: {proc.stderr.strip()}")
    return f"scancel {' '.join(job_ids)}"


def _confirm(what: str, yes: bool) -> bool | None:
    """True to go on, False when the user said no, None when there is no terminal to ask on."""
    if yes:
        return True
    if not sys.stdin.isatty():
        return None
    answer = input(f"cancel {what}? [y/N] ").strip().lower()
    return answer in ("y", "yes")


def cancel_main(argv: list[str]) -> int:
    """Cancel a run's or a sweep's live jobs; 0 when done (or nothing was live), 1 when cancelling failed,
    2 for a bad path or a missing --yes."""
    args = _parser().parse_args(argv)
    path = Path(args.path)
    if RunDir(path).spec.exists():
        states = [run_state(path)]
    elif path.is_dir() and is_sweep_dir(path):
        states = sweep_states(path)[1]
    else:
        print(f"error: {path}: neither a run dir nor a sweep dir. Fix: pass the directory hpc-ft submit printed "
              "(hpc-ft list shows them)", file=sys.stderr)
        return EXIT_BAD_INPUT
    live = [s for s in states if s.live and s.job_id]
    if not live:
        print(f"nothing to cancel: no pending or running job in {path} "
              f"({', '.join(sorted({s.state for s in states})) or 'no jobs'})")
        return 0
    what = ", ".join(f"job {s.job_id} ({where_text(s)}, {s.state})" for s in live)
    ok = _confirm(what, args.yes)
    if ok is None:
        print(f"error: cancel needs confirmation and there is no terminal to ask on. Fix: hpc-ft cancel "
              f"{shlex.quote(str(path))} --yes", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not ok:
        print("not cancelled")
        return 0
    return _cancel(live, path, args.grace_s, whole_arrays=not RunDir(path).spec.exists())


def _cancel(live: list[RunState], path: Path, grace_s: float, whole_arrays: bool = False) -> int:
    """Cancel the ``live`` jobs: Slurm's with one scancel (with ``whole_arrays``, a sweep dir's, each array's id:
    its tasks not yet listed too), local ones through ``local_pid`` only. 0, or 1 when any was not cancelled."""
    code = 0
    slurm = [s for s in live if s.probe == SLURM_JOB and SLURM_ID.fullmatch(s.job_id or "")]
    local = {id(s): pid for s in live if (pid := local_pid(s)) is not None}
    known = {id(s) for s in slurm} | set(local)
    for s in live:
        if id(s) not in known:
            print(f"error: job {s.job_id} of {s.run_dir} ({where_text(s)}) not cancelled: its run dir records neither "
                  "a Slurm job nor a live local job submitted from this host (its owner record). Fix: run hpc-ft "
                  "cancel on the host that submitted it, or cancel it with its scheduler's own command",
                  file=sys.stderr)
            code = 1
    live = [s for s in live if id(s) in known]
    if not live:
        return code
    # Recorded before the signal: status shows CANCELLED as soon as the job has ended, not what it died of.
    records = {id(s): record_cancel(s) for s in live}
    done: set[int] = set()
    try:
        if slurm:
            ids = {s.job_id.split("_")[0] if whole_arrays else s.job_id for s in slurm}
            print(cancel_slurm(sorted(ids)))
            done.update(id(s) for s in slurm)
        for s in live:
            if id(s) in local:
                print(cancel_local(str(local[id(s)]), grace_s, checkpoints=not runs_script(s)))
                done.add(id(s))
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    for s in live:
        if id(s) not in done:  # not cancelled: its record must not call it so
            records[id(s)].unlink(missing_ok=True)
    print("\n".join(resume_lines(live)))
    return code


def resume_command(run_dir: str | Path) -> str:
    """The command that submits the job of ``run_dir`` again into ``run_dir`` itself, quoted for a POSIX shell:
    ``--from`` takes the overrides the run was submitted with (its job.yaml, as ``hpc-ft submit --from`` reads
    them) and drops their run dir; the ``hydra.run.dir`` after it names this one, so the job resumes there. The
    path is absolute, so the command works from any directory."""
    path = str(Path(run_dir).absolute())
    value = f"hydra.run.dir={path}"
    if not re.fullmatch(r"[\w./+@-]+", path):  # Hydra's grammar reads spaces, commas, quotes, $ in its own way
        from hpc_ft.config.overrides import hydra_quote

        value = hydra_quote("hydra.run.dir", path)
    return f"hpc-ft submit --from {shlex.quote(path)} {shlex.quote(value)}"


def resume_lines(cancelled: list[RunState]) -> list[str]:
    """What to tell the user about resuming the ``cancelled`` runs: the command for each run dir (a sweep's jobs
    each), or why there is none."""
    dirs = list(dict.fromkeys(Path(s.run_dir) for s in cancelled if s.spec is not None))
    kept = "the run dir is kept" if len(cancelled) == 1 else "the run dirs are kept"
    apps = {s.spec.hydra_app for s in cancelled if s.spec is not None and s.spec.hydra_app}
    if apps:  # hpc-ft submit --from refuses such a job: the app composes its own config
        return [f"{kept}; a job of your own Hydra app ({', '.join(sorted(apps))}): run the app again to resume it "
                "(hpc-ft report RUN_DIR prints its command)"]
    if not dirs:
        return [f"{kept}; no job had started, so there is nothing to resume"]
    if all(runs_script(s) for s in cancelled):
        head = (f"{kept}; this runs the script again there (the same overrides): it continues only from a checkpoint "
                "of its own ($HPC_FT_RUN_DIR, README \"Bring your own script\")")
    else:
        head = f"{kept}; to resume (the same overrides: it continues from the newest checkpoint)"
    return [f"{head}:", *(f"  {resume_command(d)}" for d in dirs)]
