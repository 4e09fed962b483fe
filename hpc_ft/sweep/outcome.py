"""What a sweep that was waited for shows when its jobs end: a short results table.

The table gives each job's line of a single run's results (hpc_ft.submit.summary): what sets the job apart, its
status, steps, final train loss and evaluation. The sweep's report beside it is ``hpc_ft.report.report_sweep``'s,
what `hpc-ft report SWEEP_DIR` writes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Collection, Sequence

from hpc_ft.rundir.records import NodeReport, TrainResult
from hpc_ft.submit.executors import SweepEntry
from hpc_ft.submit.summary import all_preempted


def job_status(reports: Sequence[NodeReport]) -> str:
    """``ok``, ``preempted`` (stopped at a checkpoint: resumable), or ``FAILED`` with each failed node's exit."""
    if not reports:
        return "no report"
    if all(r.ok for r in reports):
        return "ok"
    if all_preempted(reports):
        return "preempted"
    return "FAILED: " + ", ".join(f"node {r.node_rank} exit {r.exit_code}"
                                  for r in reports if not r.ok and not r.resumable)


def _num(v: Any, spec: str = "") -> str:
    return "-" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def evaluation(t: TrainResult) -> str:
    """The job's evaluation in words, as a single run's results give it; a script's own metrics by their names."""
    text = t.eval_summary()
    if text == "-" and t.metrics:
        text = ", ".join(f"{k} {_num(v, '.4g')}" for k, v in t.metrics.items())
    return text


def results_table(entries: Sequence[SweepEntry], sweep_dir: Path, shared: Collection[str] = ()):
    """A rich renderable (a title line, then a Table), one row per job by its number: its overrides (less ``shared``, the ones every job was given, and
    Hydra's own), status, steps, final train loss and evaluation; a run dir column only where some job's run dir
    is not Hydra's default ``SWEEP_DIR/<job>`` (else the title says so)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    entries = sorted(entries, key=lambda e: e.num)
    dirs = [os.path.relpath(e.spec.run_dir, sweep_dir) for e in entries]
    dirs = [str(e.spec.run_dir) if d.startswith("..") else d for e, d in zip(entries, dirs)]
    own_dirs = any(d != str(e.num) for e, d in zip(entries, dirs))
    where = f"of {sweep_dir}" if own_dirs else f"run dirs {os.path.join(sweep_dir, '<job>')}"
    table = Table()
    for col in ("job", "overrides", "status", "steps", "final loss", "evaluation", *(["run dir"] * own_dirs)):
        table.add_column(col, justify="right" if col in ("job", "steps", "final loss") else "left",
                         overflow="fold")  # folded, never cut: a value cut short reads as another value
    for e, d in zip(entries, dirs):
        first = next((r.train for r in e.reports if r.train), None) or TrainResult(steps=None)
        apart = [o for o in e.spec.overrides
                 if o not in shared and not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
        table.add_row(str(e.num), " ".join(apart) or "-", job_status(e.reports), _num(first.steps),
                      _num(first.final_loss, ".4f"), evaluation(first), *([d] * own_dirs))
    # The title above the table, not its caption: a title wraps at the table's width, and a path broken in two
    # cannot be copied.
    title = Text(f"sweep results: {len(entries)} job(s), {where}", no_wrap=True, overflow="ignore")
    return Group(title, table)
