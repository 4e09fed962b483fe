"""`hpc-ft status [RUN_DIR|SWEEP_DIR] [--json]`: where a run or a sweep stands. No torch; one Slurm query.

A run: its job and state (pending with Slurm's reason, running, requeued N times, preempted, pruned by a search,
completed, failed, cancelled), the current step of max, throughput, ETA, the last telemetry sample and each node's
state.
A sweep or search dir: one line per job. Without a path: the newest run (or the sweep of the newest run) under
./outputs and ./multirun, by when it started, named dirs included.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

from hpc_ft.commands.runstate import (NOT_SUBMITTED, RunState, find_runs_and_sweeps, is_sweep_dir, run_state,
                                     started_unix_s, steps_text, sweep_states, where_text)
from hpc_ft.rundir.layout import RunDir, SweepDir

EXIT_BAD_INPUT = 2
DEFAULT_ROOTS = ("outputs", "multirun")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpc-ft status", description=__doc__.split("\n\n")[0])
    p.add_argument("path", nargs="?", help="a run dir or a sweep dir (default: the newest under outputs/, multirun/)")
    p.add_argument("--json", action="store_true", help="print the state as JSON")
    return p


def fmt_duration(s: float | None) -> str:
    """``s`` seconds as 45 s, 12 min, 3.2 h; '-' when unknown."""
    if s is None:
        return "-"
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def state_text(st: RunState) -> str:
    """PENDING (Resources), RUNNING, requeued 2x, ..."""
    text = st.state + (f" ({st.reason})" if st.reason else "")
    return text + (f", requeued {st.requeues}x" if st.requeues else "")


def metric_text(st: RunState) -> str:
    """``name=value`` of the run's metric; '-' without one."""
    return f"{st.metric[0]}={st.metric[1]:.4g}" if st.metric else "-"


def table(header: list[str], rows: list[list[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """``header`` and ``rows`` as lines of columns two spaces apart, each column as wide as its widest cell, so that
    a long state or metric does not push the columns after it out of line; the columns numbered in ``right`` are
    right-aligned, and the last column is not padded (a path)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells[:-1], widths))]
        return "  ".join([*padded, cells[-1]])

    return [line(r) for r in [header, *rows]]


def _sample_text(row: dict[str, float]) -> str:
    age = time.time() - row.get("t", time.time())
    parts = [f"{age:.0f} s ago"]
    for col, label, unit in (("cpu_util_pct", "cpu", "%"), ("job_rss_gb", "rss", " GB")):
        if col in row and row[col] == row[col]:
            parts.append(f"{label} {row[col]:.{0 if unit == '%' else 2}f}{unit}")
    for col in sorted(c for c in row if c.startswith("gpu") and c.endswith(("_util_pct", "_mem_used_gb"))):
        if row[col] == row[col]:
            parts.append(f"{col} {row[col]:.1f}")
    return ", ".join(parts)


def render_run(st: RunState) -> str:
    spec = st.spec
    lines = [f"run dir: {st.run_dir}"]
    job = f"job {st.job_id} ({where_text(st)})" if st.job_id else "no job recorded"
    lines.append(f"{job}: {state_text(st)}")
    if st.state == NOT_SUBMITTED:
        lines.append(f"hpc-ft sbatch wrote its batch script; submit it with: sbatch "
                     f"{shlex.quote(str(RunDir(st.run_dir).sbatch_script))}")
    # A script's or a Hydra app's job that reported no progress has no step to show (not "step 0").
    if st.step is not None or (spec and spec.max_steps is not None):
        of = f" of {spec.max_steps}" if spec and spec.max_steps else ""
        sps = f", {st.samples_per_s:.1f} samples/s" if st.samples_per_s else ""
        eta = f", ETA {fmt_duration(st.eta_s)}" if st.eta_s is not None else ""
        lines.append(f"step {st.step if st.step is not None else 0}{of}{sps}{eta}")
    if st.metric:
        lines.append(f"{st.metric[0]}: {st.metric[1]:.4g}")
    if st.last_sample:
        lines.append(f"telemetry (node 0): {_sample_text(st.last_sample)}")
    for n in st.nodes:
        extra = ", ".join(x for x in (n.host, f"{n.steps} steps" if n.steps is not None else None) if x)
        lines.append(f"  node {n.rank}: {n.state}" + (f" ({extra})" if extra else ""))
    return "\n".join(lines)


def render_sweep(path: Path, states: list[RunState]) -> str:
    rows = [[str(i), st.job_id or "-", state_text(st), steps_text(st), metric_text(st), str(st.run_dir)]
            for i, st in enumerate(states)]
    return "\n".join([f"sweep dir: {path} ({len(states)} job(s))",
                      *table(["job", "job id", "state", "step", "metric", "run dir"], rows, frozenset({0, 3}))])


def newest_dir(roots: tuple[str, ...] = DEFAULT_ROOTS) -> Path | None:
    """The dir of hpc_ft's newest run under ``roots``: every run dir at any depth, as ``hpc-ft list`` finds them
    (outputs/DATE/TIME, outputs/NAME of ``hydra.run.dir=``, a sweep's jobs), the newest by when it started
    (``started_unix_s``); a sweep's or a search's job stands for its sweep dir, which is returned. Another Hydra
    app's run in the same outputs/ (it has no job.yaml) is passed over."""
    dirs = [Path(r) for r in roots if Path(r).is_dir()]
    runs, sweeps = find_runs_and_sweeps(dirs)  # one walk of outputs/ and multirun/ for both
    started: dict[Path, float] = {}
    for run in runs:
        shown = _sweep_of(run, dirs) or run
        started[shown] = max(started.get(shown, 0.0), started_unix_s(run))
    for sweep in sweeps:  # a sweep whose jobs have no run dir yet (all pending): its manifest's time
        if sweep not in started and is_sweep_dir(sweep):
            started[sweep] = SweepDir(sweep).manifest.stat().st_mtime
    return max(started, key=lambda p: started[p]) if started else None


def _sweep_of(run: Path, roots: list[Path]) -> Path | None:
    """The sweep or search dir ``run`` is a job of (the nearest dir above it, below its root, with a sweep's
    manifest or a search's journal); None for a run of its own."""
    for parent in run.parents:
        if parent in roots or not any(r in parent.parents for r in roots):
            return None
        sd = SweepDir(parent)
        if sd.manifest.exists() or sd.tune_journal.exists():
            return parent
    return None


def _to_json(st: RunState) -> dict:
    d = dataclasses.asdict(st)
    d["run_dir"] = str(st.run_dir)
    return d


def status_main(argv: list[str]) -> int:
    """Print the state of a run or sweep dir; 0, or 2 when the path is not one."""
    args = _parser().parse_args(argv)
    path = Path(args.path) if args.path else newest_dir()
    if path is None or not path.is_dir():
        print(f"error: {args.path or 'no run under outputs/ or multirun/'}: not a directory. Fix: pass a run dir "
              "or a sweep dir (hpc-ft list shows them)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if RunDir(path).spec.exists():
        st = run_state(path)
        print(json.dumps(_to_json(st), indent=1, default=str) if args.json else render_run(st))
        return 0
    if is_sweep_dir(path):
        _, states = sweep_states(path)
        print(json.dumps([_to_json(s) for s in states], indent=1, default=str) if args.json
              else render_sweep(path, states))
        return 0
    print(f"error: {path}: neither a run dir (no job.yaml) nor a sweep dir (no manifest.json, no run dirs below). "
          "Fix: pass the directory hpc-ft submit printed (hpc-ft list shows them)", file=sys.stderr)
    return EXIT_BAD_INPUT
