"""Search driver costs on the local executor (issue 16): a small `hpc-ft tune` search of the synthetic task.

- driver overhead per trial: the driver's own time (propose, compose, submit, read evaluations, prune, stop,
  tell), i.e. its wall time minus its waits on the trials, over the trials run (goal <= 1 s);
- the gap between a trial ending and the next one starting on the resources it freed (median): node 0's
  report written -> the next trial's torchrun started, one trial at a time (report only).

    python benchmarks/bench_tune.py --json OUT [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, print_table, write_json  # noqa: E402

TRIAL = ["model=mlp", "data=synthetic", "precision=fp32", "telemetry=off", "resources.workers_per_node=1",
         "train.eval_every_steps=25", "train.ckpt_every_steps=25", "train.log_every_steps=25",
         "train.warmup_steps=0", "tune.poll_interval_s=0.2", "tune.parallelism=1"]


def measure(quick: bool) -> dict:
    """Run the search in this process; returns its timings (seconds)."""
    from hydra import initialize_config_dir

    from hpc_ft import CONF_DIR
    from hpc_ft.commands.tune import compose_trial, prepare
    from hpc_ft.config import register_configs
    from hpc_ft.rundir.layout import RunDir
    from hpc_ft.tune.driver import Driver

    trials = 3 if quick else 8
    overrides = ["optim.lr=tag(log,interval(1e-3,1e-1))", *TRIAL, f"tune.trials={trials}",
                 f"train.max_steps={50 if quick else 200}"]
    register_configs()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        space, base = prepare(overrides)
        driver = Driver(Path(tmp), base, space, compose_trial, say=lambda line: None)
        t0 = time.monotonic()
        driver.run()
        wall = time.monotonic() - t0
        runs = [RunDir(Path(tmp) / str(n)) for n in range(trials)]
        spans = [(r.node(0).torchrun_argv.stat().st_mtime, r.node(0).report.stat().st_mtime) for r in runs]
    spans.sort()
    gaps = [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:])]
    return {"trials": trials, "wall_s": wall, "wait_s": driver.wait_s,
            "overhead_per_trial_s": (wall - driver.wait_s) / trials, "median_gap_s": statistics.median(gaps)}


def rows(d: dict) -> list[Row]:
    n = d["trials"]
    return [Row(f"tune driver overhead per trial (propose, start, report, stop), local, {n} trials", "-",
                d["overhead_per_trial_s"], float("nan"), n, "<= 1 s", key="tune.overhead"),
            Row(f"tune: trial end -> next trial's torchrun started (median), local, 1 at a time", "-",
                d["median_gap_s"], float("nan"), n - 1, "report", key="tune.gap")]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the measurements here")
    ap.add_argument("--quick", action="store_true", help="3 short trials (CI)")
    args = ap.parse_args()
    d = measure(args.quick)
    r = rows(d)
    print_table(r, "search driver (hpc-ft tune)")
    if args.json:
        write_json(args.json, {**d, "rows": [x.to_dict() for x in r]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
