"""`hpc-ft list [DIR ...] [--sort time|metric|steps|gpu_hours] [--json]`: recent runs and sweeps. No torch.

Every run dir below the given dirs (default ./outputs and ./multirun) with its state, the task's metric, steps,
GPU-hours and wall time, newest first (or sorted by ``--sort``); a sweep's runs are listed by their paths. Slurm is
asked only about runs whose dir still names a job in its lock record (one query per job).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hpc_ft.commands.runstate import RunState, apply_slurm, find_run_dirs, run_state, steps_text
from hpc_ft.commands.status import DEFAULT_ROOTS, _to_json, fmt_duration, state_text

EXIT_BAD_INPUT = 2
SORT_KEYS = ("time", "metric", "steps", "gpu_hours")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpc-ft list", description=__doc__.split("\n\n")[0])
    p.add_argument("dirs", nargs="*", help="where to look (default: outputs/ and multirun/)")
    p.add_argument("--sort", choices=SORT_KEYS, default="time", help="order: newest first, or by the value, "
                   "largest first (default: time)")
    p.add_argument("--limit", type=int, default=50, help="at most this many runs (default 50; 0: all)")
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    return p


def _sort_key(key: str):
    def k(st: RunState):
        value = {"time": st.updated_unix_s, "metric": st.metric[1] if st.metric else None, "steps": st.step,
                 "gpu_hours": st.gpu_hours}[key]
        return (value is not None, value or 0)
    return k


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

    states = [run_state(p, query_slurm=False) for p in find_run_dirs(roots)]
    apply_slurm([s for s in states if RunDir(s.run_dir).owner.exists()])
    states.sort(key=_sort_key(args.sort), reverse=True)
    if args.limit > 0:
        states = states[:args.limit]
    if args.json:
        print(json.dumps([_to_json(s) for s in states], indent=1, default=str))
        return 0
    if not states:
        print(f"no runs under {', '.join(map(str, roots))}")
        return 0
    print(f"{'state':<24} {'metric':<24} {'steps':>11} {'GPU-h':>7} {'wall':>8}  run dir")
    for st in states:
        metric = f"{st.metric[0]}={st.metric[1]:.4g}" if st.metric else "-"
        steps = steps_text(st)
        gpu_h = f"{st.gpu_hours:.2f}" if st.gpu_hours is not None else "-"
        print(f"{state_text(st):<24} {metric:<24} {steps:>11} {gpu_h:>7} {fmt_duration(st.wall_s):>8}  {st.run_dir}")
    return 0
