"""Duration of each sweep point: given, or taken from earlier runs' reports. Pure (takes dicts, reads nothing).

A history record is a dict as a run's report.json holds it::

    {"overrides": ["optim.lr=1e-5", ...], "wall_s": 1234.5, "gpus": 4, "ok": true}

``overrides`` may also sit under ``"spec"``; ``gpus`` may be given as ``"resources": {"nodes", "gpus_per_node"}``.
Records without a positive ``wall_s`` or marked failed (``ok`` false or ``exit_code`` non-zero) are ignored.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from typing import Any

from hpc_ft.errors import ConfigError, Problem
from hpc_ft.sched.model import SweepJob


@dataclass(frozen=True)
class DurationEstimate:
    duration_h: float
    source: str  # how it was obtained, for the plan's assumptions
    samples: int  # earlier runs it rests on (0: given)


def _pairs(overrides: list[str]) -> frozenset[str]:
    """Overrides as a set of key=value, without Hydra's +/++/~ prefixes (they do not change the value)."""
    return frozenset(o.lstrip("+~").strip() for o in overrides)


def _record(rec: dict[str, Any]) -> tuple[frozenset[str], float, int | None] | None:
    wall_s = rec.get("wall_s")
    if not isinstance(wall_s, (int, float)) or not wall_s > 0:
        return None
    if rec.get("ok") is False or rec.get("exit_code", 0) != 0:
        return None
    overrides = rec.get("overrides", (rec.get("spec") or {}).get("overrides", []))
    gpus = rec.get("gpus")
    res = rec.get("resources")
    if gpus is None and isinstance(res, dict) and res.get("gpus_per_node"):
        gpus = int(res.get("nodes", 1)) * int(res["gpus_per_node"])
    return _pairs(list(overrides)), float(wall_s), (int(gpus) if gpus else None)


def estimate_duration(job: SweepJob, history: list[dict[str, Any]]) -> DurationEstimate | None:
    """Median wall time of the earlier runs sharing the most overrides with ``job`` (None: no history).

    A run on a different GPU count is converted to ``job.gpus`` with the job's scaling model first.
    """
    want = _pairs(job.overrides)
    recs = [r for r in map(_record, history) if r is not None]
    if not recs:
        return None
    best = max(len(want & pairs) for pairs, _, _ in recs)
    chosen = [r for r in recs if len(want & r[0]) == best]
    hours = []
    for _, wall_s, gpus in chosen:
        wall_h = wall_s / 3600.0
        if gpus is not None and gpus != job.gpus:  # rescale from the run's GPUs to the job's request
            probe = replace(job, gpus=gpus, est_duration_h=wall_h)
            wall_h = probe.duration_h(job.gpus)
        hours.append(wall_h)
    exact = any(pairs == want for pairs, _, _ in chosen) and best == len(want)
    how = ("the same overrides" if exact else
           f"{best} of its {len(want)} overrides" if best else "no override in common (all runs)")
    return DurationEstimate(statistics.median(hours), f"median of {len(hours)} earlier run(s) sharing {how}",
                            len(hours))


def estimate_durations(jobs: list[SweepJob], history: list[dict[str, Any]],
                       default_h: float | None = None) -> tuple[list[SweepJob], list[str]]:
    """Fill ``est_duration_h`` of jobs that have none (<= 0) from history, else ``default_h``.

    Returns the jobs and one note per estimated job; raises ConfigError naming every job left without one.
    """
    out, notes, problems = [], [], []
    for job in jobs:
        if job.est_duration_h > 0:
            out.append(job)
            continue
        est = estimate_duration(job, history)
        if est is not None:
            out.append(replace(job, est_duration_h=est.duration_h))
            notes.append(f"{job.name}: {est.duration_h:.4g} h, {est.source}")
        elif default_h is not None and default_h > 0:
            out.append(replace(job, est_duration_h=default_h))
            notes.append(f"{job.name}: {default_h:g} h, the given default (no earlier runs)")
        else:
            problems.append(Problem(f"sweep[{job.name}].est_duration_h", job.est_duration_h,
                                    "has no duration and no earlier run to take one from",
                                    "pass sched.est_duration_h=HOURS or give the reports of earlier runs"))
    if problems:
        raise ConfigError(problems)
    return out, notes
