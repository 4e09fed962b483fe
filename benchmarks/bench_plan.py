"""Sweep planner speed: plan + render a 1,000-point sweep (goal <= 2 s), LP allocation for 1,000 jobs (<= 1 s).

Each measurement alternates with its raw baseline in the same run:
- plan + render against a hand-written minimum (sort by duration, heapq list schedule, json.dumps of the rows);
- LP allocation against one bare ``linprog(method="highs")`` solve of the same, prebuilt level-1 LP.

    python benchmarks/bench_plan.py            # 7 repetitions, medians as a table and JSON
    python benchmarks/bench_plan.py --quick    # 3 repetitions (CI)
    python benchmarks/bench_plan.py --out .benchmarks/plan.json --check   # exit 1 if a goal is missed
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, alternate, print_table, write_json  # noqa: E402
from hpc_ft.sched import Budget, SweepJob, plan_json, plan_sweep, plan_table  # noqa: E402
from hpc_ft.sched.lp import allocate_lp, build_lp  # noqa: E402

N_JOBS = 1000


def sweep(n: int = N_JOBS, seed: int = 0) -> list[SweepJob]:
    """A 1,000-point lr x seed x precision sweep: 2-GPU requests, 1-8 GPUs allowed, Amdahl p = 0.95."""
    rng = random.Random(seed)
    return [SweepJob(name=str(i), gpus=2, est_duration_h=rng.uniform(0.5, 6.0), priority=rng.choice([1, 2, 3]),
                     submit_order=i, overrides=[f"optim.lr={rng.choice([1, 2, 3, 5])}e-5", f"train.seed={i}",
                                                f"precision={rng.choice(['bf16', 'fp32'])}"],
                     min_gpus=1, max_gpus=8, parallel_fraction=0.95) for i in range(n)]


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def raw_plan_and_render(jobs: list[SweepJob], gpu_cap: int) -> str:
    """The least a script would do: every job on its request, shortest first, list-scheduled, dumped."""
    ordered = sorted(jobs, key=lambda j: (j.est_duration_h, j.submit_order))
    running: list[tuple[float, int]] = []
    free, now, rows = gpu_cap, 0.0, []
    for j in ordered:
        while free < j.gpus:
            end, g = heapq.heappop(running)
            now, free = max(now, end), free + g
        heapq.heappush(running, (now + j.est_duration_h, j.gpus))
        free -= j.gpus
        rows.append({"name": j.name, "gpus": j.gpus, "start_h": now, "end_h": now + j.est_duration_h,
                     "overrides": j.overrides})
    return json.dumps(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions instead of 7 (CI)")
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args(argv)
    repeats = 3 if args.quick else 7
    jobs = sweep()
    budget = Budget(gpus=64, gpu_hours=20000.0)
    rows: list[Row] = []
    goals: dict[str, float] = {}

    def plan_render(policy: str):
        def run() -> float:
            return timed(lambda: (plan_table(p := plan_sweep(jobs, budget, policy, "sjf")), plan_json(p)))
        return run

    for policy in ("equal", "lp"):
        a, b = alternate(plan_render(policy), lambda: timed(lambda: raw_plan_and_render(jobs, 64)), repeats)
        name = f"plan + table + JSON, {N_JOBS}-point sweep, policy={policy}, order=sjf, 64 GPUs"
        rows.append(Row(name, "sort + heapq schedule + json.dumps", a, b, repeats, "<= 2 s"))
        goals[name] = 2.0

    for gpus, regime in ((64, "area-bound"), (1024, "tail-bound, fractional")):
        lp_budget = Budget(gpus=gpus)
        lp = build_lp(jobs, lp_budget, None)
        from scipy.optimize import linprog

        def bare() -> float:
            return timed(lambda: linprog(lp.c_makespan, A_ub=lp.a_ub, b_ub=lp.b_ub, A_eq=lp.a_eq, b_eq=lp.b_eq,
                                         bounds=(0, None), method="highs"))

        a, b = alternate(lambda: timed(lambda: allocate_lp(jobs, lp_budget, None, "makespan")), bare, repeats)
        name = f"LP allocation, {N_JOBS} jobs x 8 GPU counts, {gpus} GPUs ({regime})"
        rows.append(Row(name, "one bare linprog(highs) of the same LP", a, b, repeats, "<= 1 s",
                        note="build + 2 lexicographic solves + rounding"))
        goals[name] = 1.0

    for r in rows:
        r.note = (r.note + "; " if r.note else "") + ("goal met" if r.median_s <= goals[r.name] else "GOAL MISSED")
    print_table(rows, f"Sweep planner ({repeats} repetitions, medians)")
    payload = {"repeats": repeats, "rows": [r.to_dict() for r in rows]}
    print(json.dumps(payload, indent=1))
    if args.out:
        write_json(args.out, payload)
    missed = [r.name for r in rows if r.median_s > goals[r.name]]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
