"""Search driver costs on the local executor (issue 16): a small `hpc-ft tune` search of the synthetic task.

- driver overhead per trial: the driver's own time (propose, compose, submit, read evaluations, prune, stop,
  tell), i.e. its wall time minus its waits on the trials, over the trials run (goal <= 1 s);
- the gap between a trial ending and the next one starting on the resources it freed (median): node 0's
  report written -> the next trial's torchrun started, one trial at a time (report only);
- with ``--slurm``, the same gap on the real local Slurm (``scripts/local-slurm.sh up``, ``SLURM_CONF`` exported),
  where the trials are the tasks of one job array and Slurm starts the next as the previous one ends.

    python benchmarks/bench_tune.py --json OUT [--quick] [--slurm]
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


# On Slurm a trial must outlive the driver's poll after its first evaluation (sub-millisecond synthetic steps).
SLURM_TRIAL = ["executor=slurm", "resources.cpus_per_task=1", "resources.mem_gb=0.5", "resources.timeout_min=10",
               "executor.poll_interval_s=0.5", "train.max_steps=4000", "train.eval_every_steps=1000",
               "train.ckpt_every_steps=1000", "train.log_every_steps=1000", "tune.poll_interval_s=0.5"]


def _without(base: list[str], replaced: list[str]) -> list[str]:
    """``base`` less the overrides whose keys ``replaced`` sets (Hydra refuses a key given twice)."""
    keys = {o.split("=", 1)[0] for o in replaced}
    return [o for o in base if o.split("=", 1)[0] not in keys]


def gaps_s(runs: list) -> list[float]:
    """Trial end (node 0's report written) -> the next trial's torchrun started, in start order (seconds)."""
    spans = sorted((r.node(0).torchrun_argv.stat().st_mtime, r.node(0).report.stat().st_mtime) for r in runs)
    return [nxt[0] - prev[1] for prev, nxt in zip(spans, spans[1:])]


def measure_slurm(quick: bool) -> dict:
    """The trial-to-trial gap of a small search on the local Slurm (one job array, one trial at a time)."""
    import subprocess

    from hpc_ft.rundir.layout import RunDir

    trials = 3 if quick else 5
    with tempfile.TemporaryDirectory() as tmp:
        sweep = Path(tmp) / "sw"
        res = subprocess.run([sys.executable, "-m", "hpc_ft.cli", "tune", "optim.lr=tag(log,interval(1e-3,1e-1))",
                              *_without(TRIAL, SLURM_TRIAL), *SLURM_TRIAL, f"tune.trials={trials}",
                              f"hydra.sweep.dir={sweep}"],
                             cwd=tmp, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise RuntimeError(f"hpc-ft tune on Slurm failed ({res.returncode}): {(res.stderr or res.stdout)[-800:]}")
        gaps = gaps_s([RunDir(sweep / str(n)) for n in range(trials)])
    return {"slurm_trials": trials, "slurm_median_gap_s": statistics.median(gaps)}


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
        gaps = gaps_s([RunDir(Path(tmp) / str(n)) for n in range(trials)])
    return {"trials": trials, "wall_s": wall, "wait_s": driver.wait_s,
            "overhead_per_trial_s": (wall - driver.wait_s) / trials, "median_gap_s": statistics.median(gaps)}


def rows(d: dict) -> list[Row]:
    n = d["trials"]
    return [Row(f"tune driver overhead per trial (propose, start, report, stop), local, {n} trials", "-",
                d["overhead_per_trial_s"], float("nan"), n, "<= 1 s", key="tune.overhead"),
            Row(f"tune: trial end -> next trial's torchrun started (median), local, 1 at a time", "-",
                d["median_gap_s"], float("nan"), n - 1, "report", key="tune.gap")] + ([
            Row(f"tune: trial end -> next trial's torchrun started (median), local Slurm, one job array, 1 at a time",
                "-", d["slurm_median_gap_s"], float("nan"), d["slurm_trials"] - 1, "report", key="tune.gap.slurm")]
            if "slurm_median_gap_s" in d else [])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="write the measurements here")
    ap.add_argument("--quick", action="store_true", help="3 short trials (CI)")
    ap.add_argument("--slurm", action="store_true", help="also the gap on the running local Slurm (SLURM_CONF)")
    args = ap.parse_args()
    d = measure(args.quick)
    if args.slurm:
        d.update(measure_slurm(args.quick))
    r = rows(d)
    print_table(r, "search driver (hpc-ft tune)")
    if args.json:
        write_json(args.json, {**d, "rows": [x.to_dict() for x in r]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
