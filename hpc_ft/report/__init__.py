"""Run reports: utilization, idle GPUs, memory, energy, GPU-hours, cost, throughput/MFU, right-sizing.

    rr = build_report(*load_run(run_dir))   # pure once loaded
    print_report(console, rr)                # terminal tables, the advised command
    write_report(rr, run_dir)                # run_dir/report/report.json + PNG plots

``main(path)`` is `hpc-ft report PATH`, for a run dir or a Hydra multirun (sweep) dir.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from hpc_ft.report.advice import Advice, advise, next_command, next_overrides
from hpc_ft.report.build import RunReport, build_report
from hpc_ft.report.load import NodeData, find_sweep_jobs, load_run
from hpc_ft.report.render import gpu_table, node_table, render_text, sweep_table, totals_lines
from hpc_ft.report.sweep_view import SweepView

__all__ = ["Advice", "NodeData", "RunReport", "advise", "build_report", "find_sweep_jobs", "gpu_table", "load_run",
           "main", "next_command", "next_overrides", "node_table", "print_report", "render_text", "report_sweep",
           "sweep_table", "totals_lines", "write_plots", "write_report", "write_sweep_report"]


def print_report(con, rr: RunReport) -> None:
    """Print ``rr``'s report on the rich Console ``con``: tables and prose fit its width; the advised `hpc-ft submit`
    command, meant to be pasted, comes last on one unbroken line whatever the width (a break without a ``\\``
    would run its first line alone, itself a valid job)."""
    con.print(render_text(rr, command=False))
    if rr.command:
        con.print(f"  {rr.command}", style="green", soft_wrap=True, markup=False, highlight=False)


def json_safe(x: Any) -> Any:
    """``x`` with NaN/inf replaced by None (JSON has no NaN; a train.json may carry one)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def write_plots(rr: RunReport, out_dir: str | Path) -> list[Path]:
    """The PNG plots of ``rr`` into ``out_dir`` (matplotlib is imported only here)."""
    from hpc_ft.report.plots import write_plots as _write

    return _write(rr, out_dir)


def write_report(rr: RunReport, run_dir: str | Path) -> Path:
    """run_dir/report/report.json (atomic) and the PNG plots beside it; returns the report directory."""
    from hpc_ft.rundir.atomic import atomic_write_text
    from hpc_ft.rundir.layout import RunDir

    rd = RunDir(run_dir)
    out = rd.report_dir
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(rd.run_report, json.dumps(json_safe(rr.to_dict()), indent=1, allow_nan=False))
    write_plots(rr, out)
    return out


def write_sweep_report(sweep_dir: str | Path, jobs: list[tuple[str, RunReport]]) -> Path:
    """sweep_dir/report/sweep.json: one entry per job (each job's own report lies in its run dir)."""
    from hpc_ft.rundir.atomic import atomic_write_text
    from hpc_ft.rundir.layout import SweepDir

    sd = SweepDir(sweep_dir)
    out = sd.report_dir
    out.mkdir(parents=True, exist_ok=True)
    keys = ("run_dir", "job", "totals", "throughput", "evaluation", "metrics", "advice", "command")
    payload = [{"sweep_job": name, **{k: rr.to_dict()[k] for k in keys}} for name, rr in jobs]
    atomic_write_text(sd.sweep_report, json.dumps(json_safe(payload), indent=1, allow_nan=False))
    return out


def main(path: str | Path) -> int:
    """`hpc-ft report PATH`: print the report of a run (or of every job of a sweep) and write its files."""
    from hpc_ft.terminal import console

    con = console()
    path = Path(path).expanduser()
    if not path.is_dir():
        con.print(f"[red]error:[/] {path} is not a directory; pass a run dir (with job.yaml) or a sweep dir",
                  soft_wrap=True)
        return 2
    from hpc_ft.errors import HpcFtError

    try:
        return _report(path, con)
    except HpcFtError as exc:  # a record this hpc_ft cannot read
        con.print(f"[red]error:[/] {exc}", soft_wrap=True)
        return 2


def _load(run_dir: Path):
    """``load_run``, with a record it cannot read (hand-edited, truncated, from another version) as one
    HpcFtError naming the run dir, instead of a YAML/JSON/OmegaConf traceback."""
    import yaml

    from hpc_ft.errors import HpcFtError

    try:
        return load_run(run_dir)
    except Exception as exc:
        if not (isinstance(exc, (OSError, ValueError, yaml.YAMLError)) or type(exc).__module__.startswith("omegaconf")):
            raise
        where = getattr(exc, "full_key", None)
        raise HpcFtError(f"cannot read the records in {run_dir}: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0]}" + (f" (key {where})" if where else "")
                         + ". Fix: restore or remove the unreadable file (job.yaml, a node report "
                         f"nodes/nodeN/node_report.json) in "
                         f"{run_dir}") from None


def report_sweep(sweep_dir: Path, fresh: set[Path] | None = None) -> list[tuple[str, RunReport]]:
    """Build the report of every job of ``sweep_dir`` (``find_sweep_jobs``), write it into each job's run dir that
    is in ``fresh`` (every job's when None: a job of an earlier batch keeps the one it has), and write
    report/sweep.json over all of them. Returns (job name relative to the sweep dir, report) per job.
    Raises HpcFtError for a job record it cannot read."""
    reports = []
    for d in find_sweep_jobs(sweep_dir):
        rr = build_report(*_load(d))
        if fresh is None or Path(d).absolute() in fresh:
            write_report(rr, d)
        reports.append((str(d.relative_to(sweep_dir)), rr))
    write_sweep_report(sweep_dir, reports)
    return reports


def _report(path: Path, con) -> int:
    from hpc_ft.rundir.layout import RunDir, SweepDir

    jobs = find_sweep_jobs(path)
    if not jobs:
        rr = build_report(*_load(path))
        if rr.job.get("name") is None and not rr.nodes:
            con.print(f"[red]error:[/] {path} holds no job.yaml and no nodes/: not an hpc_ft run or sweep dir",
                      soft_wrap=True)
            return 2
        print_report(con, rr)
        out = write_report(rr, path)
        con.print(f"wrote {RunDir(path).run_report} and plots in {out}")
        return 0
    reports = report_sweep(path)
    # Output that is no terminal (a file, a log) gets the whole table, however wide: there is no window to fit, and
    # squeezed into 120 columns its overrides were cut; a terminal gets the table fitted (short keys, listed under).
    con.print(SweepView(reports, sweep_table, widen=not sys.stdout.isatty()), crop=False)
    for name, rr in reports:
        con.rule(f"job {name}")
        print_report(con, rr)
    con.print(f"wrote {SweepDir(path).sweep_report}; each job's report.json and plots are in its run dir")
    return 0
