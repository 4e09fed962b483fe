"""The Fix for a sweep that hpc_ft's own rules refused job by job: the same command with the refused values left out.

Hydra's refusals of a sweep value (``train.max_steps=10,abc``) get "the sweep without it" from
``overrides.refused_override``. A value Hydra accepts but validation refuses (``optim.lr=0.01,-1,0``) is refused
in the jobs that have it; the launcher names them (``hpc_ft.sweep.plan.prefixed_problems``: "sweep job 1: ...",
"sweep jobs 0, 2: ..."). Hydra's basic sweeper numbers jobs in the order of the cartesian product of the sweep's
values (``BasicSweeper.split_arguments``), so a value is to blame when every job that has it is refused.
"""

from __future__ import annotations

import re
import shlex

from hpc_ft.errors import ConfigError

# The prefix prefixed_problems gives a problem that only some jobs of a sweep have.
_SWEEP_JOBS = re.compile(r"^sweep jobs? (\d+(?:, \d+)*): (.*)$", re.S)


def refused_jobs(error: ConfigError) -> tuple[set[int], set[str]] | None:
    """The sweep jobs the problems of ``error`` name and the keys they name; None when a problem names no job
    (every job of the sweep has it, or it is the sweep's own, such as its budget): dropping values cannot help."""
    jobs: set[int] = set()
    keys: set[str] = set()
    for p in error.problems:
        m = _SWEEP_JOBS.match(p.key)
        if m is None:
            return None
        jobs.update(int(n) for n in m.group(1).split(", "))
        keys.add(m.group(2))
    return (jobs, keys) if jobs else None


def sweep_refusal_fix(args: list[str], prog: str, error: BaseException) -> str:
    """The Fix line for a sweep (``prog args``, ``-m`` among them) whose jobs validation refused: "did you mean" the
    command with every refused value dropped from its sweep (the other values kept, shell-quoted, ready to paste);
    a line saying so where no value would be left or only a combination of values is refused; "" where this does
    not apply (not a sweep of Hydra's basic sweeper, or a problem every job has: its own fix stands)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    refused = refused_jobs(error) if isinstance(error, ConfigError) else None
    if refused is None or not any(a in ("-m", "--multirun") for a in args):
        return ""
    failed, problem_keys = refused
    parser = OverridesParser.create()
    task = []  # (index in args, parsed override): what Hydra's sweeper expands, in command-line order
    for i, a in enumerate(args):
        if a.startswith("-") or ("=" not in a and not a.startswith("~")):
            continue
        try:
            ov = parser.parse_override(a)
        except HydraException:
            return ""
        if ov.is_hydra_override():
            if ov.key_or_group.startswith(("hydra.sweeper", "hydra/sweeper")):
                return ""  # another sweeper (or extra sweeper params) numbers the jobs its own way
            continue
        task.append((i, ov))
    jobs = BasicSweeper.split_arguments([ov for _, ov in task], None)[0]
    if not jobs or max(failed) >= len(jobs):
        return ""  # not the sweep the launcher numbered
    if len(failed) == len(jobs):
        swept = [args[i] for i, ov in task if ov.is_sweep_override() and ov.key_or_group in problem_keys]
        which = f"of the sweep {', '.join(swept)}" if swept else "of the sweep"
        return (f"Fix: every job {which} is refused, so no value is left to sweep over once the refused ones are "
                "dropped: each problem's fix above says what passes")
    bad: dict[int, list[str]] = {}  # position in a job's overrides -> its refused "key=value"s
    for pos in range(len(jobs[0])):
        values = list(dict.fromkeys(job[pos] for job in jobs))
        dropped = [v for v in values if all(n in failed for n, job in enumerate(jobs) if job[pos] == v)]
        if dropped:
            bad[pos] = dropped
    left = [n for n, job in enumerate(jobs) if not any(job[pos] in vs for pos, vs in bad.items())]
    combined = sorted(n for n in left if n in failed)
    if combined:
        return (f"Fix: sweep job{'s' if len(combined) > 1 else ''} {', '.join(map(str, combined))}: refused for a "
                "combination of values that each pass in another job, so no value can be dropped for "
                f"{'them' if len(combined) > 1 else 'it'}: change the sweep (each problem's fix above says what "
                "passes)")
    new = list(args)
    for pos, dropped in bad.items():
        key = jobs[0][pos].split("=", 1)[0]
        at = max(i for i, ov in task if ov.get_key_element() == key)  # a repeated key: the last one counts
        kept = [v.split("=", 1)[1] for v in dict.fromkeys(job[pos] for job in jobs) if v not in dropped]
        new[at] = f"{args[at].split('=', 1)[0]}={','.join(kept)}"
    gone = [v for vs in bad.values() for v in vs]
    return (f"Fix: the sweep without {', '.join(gone)} (every job with {'it' if len(gone) == 1 else 'them'} is "
            f"refused); did you mean {' '.join([prog, *map(shlex.quote, new)])}")
