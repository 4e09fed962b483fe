"""`hpc-ft submit --from RUN_DIR [--apply-advice] [overrides...]`: submit a run's job again, in a new run dir.

``--from RUN_DIR`` takes the overrides that run was submitted with (its job.yaml); ``--apply-advice`` puts the
right-sizing overrides of its run report in place of theirs (the same ones ``hpc-ft report`` prints, from
``hpc_ft.report.advice.next_overrides``); overrides given after them win. This module turns those flags into
the plain override list ``hpc-ft submit`` composes; everything else is the ordinary submission.
"""

from __future__ import annotations

from pathlib import Path

from hpc_ft.errors import ConfigError, Problem

FROM, APPLY = "--from", "--apply-advice"


def uses_from(argv: list[str]) -> bool:
    """Whether ``hpc-ft submit ARGV`` asks for a resubmission (``--from``/``--apply-advice``)."""
    return any(a == FROM or a.startswith(FROM + "=") or a == APPLY for a in argv)


def _split(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    run_dir, apply, rest, i = None, False, [], 0
    while i < len(argv):
        a = argv[i]
        if a == FROM:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                raise ConfigError([Problem(FROM, None, "needs the run dir to resubmit",
                                           "pass --from RUN_DIR (hpc-ft list shows run dirs)")])
            run_dir, i = argv[i + 1], i + 2
            continue
        if a.startswith(FROM + "="):
            run_dir = a.split("=", 1)[1]
        elif a == APPLY:
            apply = True
        else:
            rest.append(a)
        i += 1
    return run_dir, apply, rest


def expand(argv: list[str]) -> tuple[list[str], list[str]]:
    """``argv`` with ``--from``/``--apply-advice`` replaced by the run's (advised) overrides, and the advice
    applied (one line each, for the user). Raises ConfigError (exit 2) for a missing or unreadable run dir,
    ``--apply-advice`` without ``--from``, or a run whose report cannot be built."""
    run_dir, apply, rest = _split(argv)
    if run_dir is None:
        raise ConfigError([Problem(APPLY, True, "applies the advice of an earlier run's report",
                                   "pass --from RUN_DIR with it")])
    from hpc_ft.rundir.layout import RunDir

    if not RunDir(run_dir).spec.exists():
        raise ConfigError([Problem(FROM, run_dir, "is not a run dir (no job.yaml)",
                                   "pass the run dir hpc-ft submit printed (hpc-ft list shows them)")])
    from hpc_ft import report
    from hpc_ft.errors import HpcFtError

    try:
        loaded = report.load_run(Path(run_dir))
    except (OSError, ValueError, HpcFtError) as exc:
        raise ConfigError([Problem(FROM, run_dir, f"its records cannot be read ({exc})",
                                   "restore job.yaml and the node reports, or pass another run")]) from None
    app = loaded[1].conf.script.hydra_app if loaded[1] is not None else None
    if app:
        from hpc_ft.report import next_command

        raise ConfigError([Problem(FROM, run_dir, "is a job of your own Hydra app, which hpc-ft submit cannot run",
                                   f"run the app again: {next_command(loaded[1], [])} (hpc-ft report {run_dir} "
                                   "shows it with the advice applied)")])
    advice = []
    if apply:
        try:
            advice = report.build_report(*loaded).advice
        except Exception as exc:  # noqa: BLE001 - any failure to build the report is the same refusal
            raise ConfigError([Problem(APPLY, run_dir, f"its run report cannot be built ({type(exc).__name__}: "
                                       f"{exc})", "run hpc-ft report on it to see why, or drop --apply-advice")])
    # The user's overrides replace the run's (and the advice's) for the same key, rather than follow them.
    def key(o: str) -> str:
        return o.lstrip("+~").split("=", 1)[0]

    mine = {key(o) for o in rest if "=" in o}
    base = [o for o in report.next_overrides(loaded[1], advice) if key(o) not in mine]
    notes = [f"advice applied: {a.override} ({a.reason})" for a in advice]
    if apply and not advice:
        notes.append(f"no advice in the report of {run_dir}: its job is resubmitted as it was")
    return [*base, *rest], notes


def expand_argv(argv: list[str]) -> list[str] | None:
    """``hpc-ft submit``'s argv with ``--from``/``--apply-advice`` expanded (unchanged without them); prints the
    advice applied, or the refusal (then returns None: exit 2)."""
    if not uses_from(argv):
        return argv
    import shlex
    import sys

    try:
        out, notes = expand(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    for n in notes:
        print(n)
    print("submitting: hpc-ft submit " + " ".join(shlex.quote(a) for a in out))
    return out
