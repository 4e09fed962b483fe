"""The `hpc-ft` command: the only place that prints to the user or touches Hydra's global state."""

from __future__ import annotations

import json
import sys
from typing import Any

USAGE = """usage: hpc-ft COMMAND [hydra overrides...]

commands:
  submit [overrides]   compose conf/, validate, dispatch (local | debug | slurm), wait, report
                       e.g. hpc-ft submit precision=fp32 optim.lr=3e-5 train.max_steps=50
                            hpc-ft submit dry_run=true      (print the job, dispatch nothing)
                            hpc-ft submit --cfg job         (print the composed config)
                            hpc-ft submit -m optim.lr=1e-5,3e-5   (a sweep)
  sbatch [overrides]   write a standalone sbatch script for the same job into its run dir
  report RUN_DIR       the run report (utilization, idle GPUs, energy, cost, advice) of a run or sweep
  plan -m [overrides]  plan a sweep within a GPU budget; submits nothing

Hydra's own flags (--cfg, --info, -m, hydra.run.dir=...) work after the command.
"""

EXIT_BAD_CONFIG = 2
EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped at a preemption checkpoint; submitting again resumes (not a failure)


class _State:
    exit_code = 0
    error: Exception | None = None
    ran = False  # the task function was called (Hydra composed a config)


def _console():
    from rich.console import Console

    # Job logs and pipes are not terminals: rich would squeeze tables into 80 columns there.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 120)


def _hydra_run(task, argv: list[str], prog: str) -> int:
    """Run ``task(cfg)`` under hydra.main with ``argv`` as the command line."""
    import hydra

    from hpc_ft import CONF_DIR
    from hpc_ft.config import register_configs

    register_configs()
    _State.exit_code, _State.error, _State.ran = 0, None, False

    def wrapped(cfg):
        from hpc_ft.errors import HpcFtError

        _State.ran = True
        try:
            code = task(cfg)
        except HpcFtError as exc:
            _State.error = exc
            code = EXIT_BAD_CONFIG
            _discard_refused_run_dir()
        _State.exit_code = max(_State.exit_code, code or 0)
        return code

    sys.argv = [prog, *argv]
    try:
        hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(wrapped)()
    except SystemExit as exc:
        if exc.code in (0, None) or _State.ran:
            raise
        # Hydra refused an override or the config before anything ran, and printed why (key, value, type).
        print("Fix: `hpc-ft submit --cfg job` prints every key with its current value; a group's options are the "
              f"files in {CONF_DIR}/<group>/ (e.g. model=mlp).", file=sys.stderr)
        return EXIT_BAD_CONFIG
    if _State.error is not None:
        print(f"error: {_State.error}", file=sys.stderr)
    return _State.exit_code


def _discard_refused_run_dir() -> None:
    """A refused job leaves no run dir behind: remove the timestamped one Hydra made for it while it holds
    only Hydra's own files. A run dir the user named (``hydra.run.dir=...``) is never touched: it may hold
    an earlier run."""
    import shutil
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.RUN or any(o.startswith("hydra.run.dir=") for o in hc.overrides.hydra):
        return
    out, cwd = Path(hc.runtime.output_dir), Path.cwd()
    from hpc_ft.rundir.lock import LOCK_FILE

    hydra_own = {hc.output_subdir, f"{hc.job.name}.log", LOCK_FILE}  # the lock of a submission refused after it
    if cwd not in out.parents or not out.is_dir() or any(p.name not in hydra_own for p in out.iterdir()):
        return
    shutil.rmtree(out, ignore_errors=True)
    for parent in out.parents:  # outputs/DATE, then outputs, while empty; never the working directory
        if parent == cwd:
            break
        try:
            parent.rmdir()
        except OSError:
            break


def _compose_spec(cfg) -> tuple[Any, list[str]]:
    """DictConfig -> validated JobSpec (+ warnings). Raises ConfigError with every problem."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from hpc_ft.config import validate
    from hpc_ft.job import resolve

    conf = OmegaConf.to_object(cfg)
    warnings = validate(conf)
    overrides = list(HydraConfig.get().overrides.task)
    return resolve(conf, overrides), warnings


def _submit_task(cfg) -> int:
    from hpc_ft.submit.describe import describe
    from hpc_ft.sweep.context import current_sweep

    sweep = current_sweep()
    if sweep is not None and sweep.take(cfg):  # -m: the hpc_ft launcher submits every job, as planned
        return 0
    spec, warnings = _compose_spec(cfg)
    con = _console()
    for w in warnings:
        con.print(f"[yellow]warning:[/] {w}")
    if spec.conf.dry_run:
        print(json.dumps(describe(spec), indent=2))
        return 0
    from hpc_ft.rundir.lock import RunDirLock

    lock = RunDirLock(spec.run_dir)
    lock.acquire(spec.conf.executor.name)  # RunDirInUse (exit 2) while another live submission uses the dir
    try:
        return _submit_locked(spec, con, lock)
    finally:
        lock.release()  # no-op once detached: a wait=false job holds the dir while it runs


def _submit_locked(spec, con, lock) -> int:
    import shlex

    from hpc_ft.submit.dispatch import submit
    from hpc_ft.submit.gather import gather, save_results, wait

    job = submit(spec)
    lock.record_job(str(job.job_id))
    con.print(f"submitted job {job.job_id} ({spec.conf.executor.name}, {spec.nodes} node(s) x "
              f"{spec.workers_per_node} worker(s)); run dir: {spec.run_dir}")
    if not spec.conf.wait:
        if spec.conf.executor.name != "debug":
            lock.detach()
        con.print(f"not waiting (wait=false); later: hpc-ft report {shlex.quote(str(spec.run_dir))}")
        return 0
    with con.status("waiting") as status:
        wait(job, poll_s=spec.conf.executor.poll_interval_s,
             on_tick=lambda state, el: status.update(f"job {job.job_id}: {state}, {el:.0f} s"))
    reports = gather(job, spec)
    save_results(spec, reports)
    from hpc_ft.submit.summary import all_preempted, render_results, resume_command

    con.print(render_results(spec, reports))
    if all_preempted(reports):  # one unbroken line whatever the terminal width: it is meant to be pasted
        con.print(f"  {resume_command(spec)}", soft_wrap=True, markup=False, highlight=False)
    _show_run_report(spec, con)
    if all(r.ok for r in reports):
        return 0
    return EXIT_PREEMPTED if all_preempted(reports) else 1


def _show_run_report(spec, con) -> None:
    """The telemetry run report, when telemetry ran; a report failure never fails the job."""
    if not spec.conf.telemetry.enabled:
        return
    try:
        from hpc_ft import report

        rr = report.build_report(*report.load_run(spec.run_dir))
        con.print(report.render_text(rr))
        report.write_report(rr, spec.run_dir)
    except Exception as exc:  # noqa: BLE001 - the training result is already printed and saved
        con.print(f"[yellow]run report unavailable:[/] {exc}")


def _sbatch_task(cfg) -> int:
    from hpc_ft.submit.dispatch import save_spec
    from hpc_ft.submit.sbatch import write_sbatch

    spec, warnings = _compose_spec(cfg)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    from hpc_ft.submit.slurm import check_sbatch_values

    check_sbatch_values(spec)  # refuse values a batch script can't hold before writing anything
    path = spec.run_dir / "job.sbatch"
    save_spec(spec)
    write_sbatch(spec, path)
    print(f"wrote {path}\nsubmit it with: sbatch {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hpc-ft` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    if argv[0] == "--version":
        from hpc_ft import __version__

        print(__version__)
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd == "submit":
        return _hydra_run(_submit_task, rest, "hpc-ft submit")
    if cmd == "sbatch":
        return _hydra_run(_sbatch_task, rest, "hpc-ft sbatch")
    if cmd == "report":
        if len(rest) != 1:
            print("usage: hpc-ft report RUN_DIR", file=sys.stderr)
            return EXIT_BAD_CONFIG
        from hpc_ft import report

        return report.main(rest[0])
    if cmd == "plan":
        from hpc_ft.sched.cli import plan_main

        return plan_main(rest)
    print(f"unknown command {cmd!r}\n\n{USAGE}", file=sys.stderr)
    return EXIT_BAD_CONFIG


if __name__ == "__main__":
    sys.exit(main())
