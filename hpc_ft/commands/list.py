"""`hpc-ft list [DIR ...] [--sort time|metric|steps|gpu_hours] [--json]`: recent runs and sweeps. No torch.

Every run dir below the given dirs (default ./outputs and ./multirun) with its state (PRUNED: a search stopped it
early), its metric (a search's trial: the search's tune.metric; else the task's first), steps, GPU-hours and wall
time, newest first (or sorted by ``--sort``); a sweep's runs are listed by their paths. Slurm is asked only about
runs whose dir still names a job in its lock record and about Slurm jobs of which the run dir tells no end (a job
array's task: one query per array), and, with one ``squeue``, about ``hpc-ft sbatch`` scripts of which no job has
started (NOT SUBMITTED when Slurm has none).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from hpc_ft.commands.runstate import (UNKNOWN, RunState, apply_sbatch_queue, apply_slurm, find_run_dirs,
                                      run_state, steps_text)
from hpc_ft.commands.status import DEFAULT_ROOTS, _to_json, fmt_duration, metric_text, state_text, table

EXIT_BAD_INPUT = 2
SORT_KEYS = ("time", "metric", "steps", "gpu_hours")
# Metrics where smaller is better, by the end of their name: hpc_ft's tasks report eval_loss and eval_perplexity
# beside their accuracies (hpc_ft.train.tasks); every other metric is taken as larger is better.
SMALLER_IS_BETTER = ("loss", "perplexity")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpc-ft list", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="*", help="where to look (default: outputs/ and multirun/)")
    p.add_argument("--sort", choices=SORT_KEYS, default="time",
                   help="order: newest first (time), largest first (steps, gpu_hours), or metric: the runs of each "
                        "metric name together (names in alphabetical order), best first: smallest first for a name "
                        "ending in loss or perplexity, largest first otherwise; runs without a metric last "
                        "(default: time)")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50; 0: all)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    return p


def metric_order(st: RunState) -> tuple[bool, str, float]:
    """Ascending sort key of ``--sort metric``: a metric's runs together, each name's best value first (values of
    different metrics, say an accuracy and a loss, are never compared); runs without a metric, then NaNs, last."""
    if st.metric is None:
        return (True, "", 0.0)
    name, value = st.metric
    if math.isnan(value):
        return (False, name, math.inf)
    return (False, name, value if name.endswith(SMALLER_IS_BETTER) else -value)


def _sorted(states: list[RunState], key: str) -> list[RunState]:
    if key == "metric":
        return sorted(states, key=metric_order)

    def k(st: RunState):
        value = {"time": st.updated_unix_s, "steps": st.step, "gpu_hours": st.gpu_hours}[key]
        return (value is not None, value or 0)
    return sorted(states, key=k, reverse=True)


def list_main(argv: list[str]) -> int:
    """Print the runs below the given dirs; 0, or 2 when a given dir does not exist."""
    args = _parser().parse_args(argv)
    roots = [Path(d) for d in args.dirs] or [Path(d) for d in DEFAULT_ROOTS]
    missing = [str(r) for r in args.dirs if not Path(r).is_dir()]
    if missing:
        print(f"error: {', '.join(missing)}: not a directory. Fix: pass dirs that hold runs (default: outputs/ "
              "and multirun/ of the current directory)", file=sys.stderr)
        return EXIT_BAD_INPUT
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.rundir.lock import SLURM_JOB

    states = [run_state(p, query_slurm=False) for p in find_run_dirs(roots)]
    apply_slurm([s for s in states
                 if RunDir(s.run_dir).owner.exists() or (s.probe == SLURM_JOB and s.state == UNKNOWN)])
    apply_sbatch_queue(states)
    states = _sorted(states, args.sort)
    if args.limit > 0:
        states = states[:args.limit]
    if args.json:
        print(json.dumps([_to_json(s) for s in states], indent=1, default=str))
        return 0
    if not states:
        print(f"no runs under {', '.join(map(str, roots))}")
        return 0
    rows = [[state_text(st), metric_text(st), steps_text(st), f"{st.gpu_hours:.2f}" if st.gpu_hours is not None
             else "-", fmt_duration(st.wall_s), str(st.run_dir)] for st in states]
    print("\n".join(table(["state", "metric", "steps", "GPU-h", "wall", "run dir"], rows, frozenset({2, 3, 4}))))
    return 0
