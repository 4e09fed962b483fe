"""The benchmarks' single entry point: every row a ratio of medians, A (hpc_ft) against B (the raw tool),
measured alternately in the same run. Prints a table and writes JSON (and the markdown table beside it).

    python benchmarks/run.py                 # CPU rows: cold start, step time, precision, submit, planner, ...
    python benchmarks/run.py --quick         # tiny sizes, one repetition: proves the harness works (CI)
    python benchmarks/run.py --only step,cold   # re-measure these groups; the day's file keeps the others' rows
    python benchmarks/run.py --gpu           # GPU rows only (needs CUDA; no hydra/omegaconf/submitit needed)
    python benchmarks/run.py --check         # exit 1 when a goal is missed

Exit status: 0, 1 when a row errored (or, with --check, missed its goal), 2 when GPU mode has no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    REPO_ROOT,
    Row,
    default_results_path,
    machine_info,
    markdown_table,
    missing_row,
    print_rich_table,
    write_json,
    write_text_atomic,
)

BENCH_DIR = REPO_ROOT / "benchmarks"
CPU_GROUPS = ("cold", "step", "submit", "plan", "report", "telemetry", "data", "fit", "tune")
# Scripts other owners keep in benchmarks/, run as they are; each one's JSON is read back into rows.
EXTERNAL = {"plan": ("bench_plan.py", "--out"), "report": ("bench_report.py", "--json"),
            "telemetry": ("bench_telemetry.py", "--json"), "tune": ("bench_tune.py", "--json")}
EXTERNAL_TIMEOUT_S = 1800


def _plan_rows(d: dict, quick: bool) -> list[Row]:
    return [Row.from_dict(r) for r in d["rows"]]


def _report_rows(d: dict, quick: bool) -> list[Row]:
    size = f"{d['nodes']} nodes x {d['gpus_per_node']} GPUs x {d['hours']:g} h at 1 Hz"
    goal_s, goal_gib = ("report", "report") if quick else ("<= 60 s", "<= 2 GiB")  # goals are for the full size
    return [
        Row(f"run report (load + summary + render + JSON + PNG), {size}", "raw numpy pass over the same files",
            d["report_s"], d["raw_numpy_pass_s"], 1, goal_s, key="report.time"),
        Row(f"run report peak RSS, {size}", "-", d["report_peak_rss_gib"], float("nan"), 1, goal_gib,
            key="report.rss", unit="GiB"),
    ]


def _telemetry_rows(d: dict, quick: bool) -> list[Row]:
    return [Row(f"telemetry sampler at {d['interval_s']:g} s ({d['arrangement']} process), MLP step on "
                f"{d['device']} using every core", "telemetry off", d["median_step_on_s"], d["median_step_off_s"],
                d["blocks"], "<= 1.01x", key="telemetry.cpu",
                note=f"sampler's own cost {d['sampler_mean_cost_ms']:.2f} ms per sample; CPU-only worst case "
                     f"(the sampler competes for the cores)")]


ADAPTERS = {"plan": _plan_rows, "report": _report_rows, "telemetry": _telemetry_rows, "tune": _plan_rows}


def run_external(group: str, quick: bool) -> list[Row]:
    """Rows of ``benchmarks/bench_<group>.py`` (another owner's script), or one row saying why there are none."""
    name, out_flag = EXTERNAL[group]
    script = BENCH_DIR / name
    if not script.exists():
        return [missing_row(f"{group}.missing", f"{group} benchmarks ({name})", "not available",
                            f"benchmarks/{name} is not in this checkout")]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rows.json"
        argv = [sys.executable, str(script), out_flag, str(out), *(["--quick"] if quick else [])]
        if group == "tune" and os.environ.get("SLURM_CONF") and not quick:  # a running local Slurm: its row too
            argv.append("--slurm")
        try:
            # Their exit status may say "goal missed"; the JSON is what counts.
            res = subprocess.run(argv, capture_output=True, text=True, timeout=EXTERNAL_TIMEOUT_S,
                                 stdin=subprocess.DEVNULL, cwd=REPO_ROOT)
            if not out.exists():
                raise RuntimeError(f"exit {res.returncode}, no JSON: {(res.stderr or res.stdout)[-600:]}")
            rows = ADAPTERS[group](json.loads(out.read_text()), quick)
        except Exception as exc:  # noqa: BLE001 - their failure is a row, not the end of our table
            return [missing_row(f"{group}.error", f"{group} benchmarks ({name})", "error", str(exc)[-800:])]
    for i, r in enumerate(rows, 1):
        r.key = r.key or f"{group}.{i}"
    return rows or [missing_row(f"{group}.empty", f"{group} benchmarks ({name})", "error", "no rows")]


def group_fns(quick: bool) -> dict[str, Callable[[], list[Row]]]:
    """Each group's measurement, imported when it runs (cold start first, before this process is busy)."""

    def cold() -> list[Row]:
        from benchmarks import bench_coldstart

        return bench_coldstart.measure(quick)

    def step() -> list[Row]:
        from benchmarks import bench_step

        return bench_step.measure(quick)

    def submit() -> list[Row]:
        from benchmarks import bench_submit

        return bench_submit.measure(quick)

    def data() -> list[Row]:
        from benchmarks import bench_data

        return bench_data.measure(quick)

    def fit() -> list[Row]:
        from benchmarks import bench_fit

        return bench_fit.measure(quick)

    fns: dict[str, Callable[[], list[Row]]] = {"cold": cold, "step": step, "submit": submit, "data": data,
                                               "fit": fit}
    for g in EXTERNAL:
        fns[g] = lambda g=g: run_external(g, quick)
    return fns


# Row-key heads that are not a group's name: the step group also measures precision, the fused optimizer and
# tracking; the planner's rows are keyed by what they plan.
KEY_GROUPS = {"precision": "step", "optim": "step", "tracking": "step"}


def group_of(key: str) -> str:
    """The group a row key belongs to (``precision.*``, ``optim.*``, ``tracking.*`` rows come from the step group)."""
    head = key.split(".", 1)[0]
    return KEY_GROUPS.get(head, head)


def merge_previous(out: Path, rows: list[Row], groups: list[str], mode: str,
                   quick: bool) -> tuple[list[Row], list[str]]:
    """With --only: keep the other groups' rows of an earlier run of the same mode in ``out``, in group order.

    Returns the rows and the earlier run's commands (the JSON lists every command that made its rows).
    """
    try:
        old = json.loads(out.read_text())
    except (OSError, ValueError):
        return rows, []
    if old.get("mode") != mode or old.get("quick") != quick:
        return rows, []
    kept = [Row.from_dict(d) for d in old.get("rows", []) if group_of(d.get("key", "")) not in groups]
    if not kept:
        return rows, []
    order = {g: i for i, g in enumerate(CPU_GROUPS)}
    merged = sorted(kept + rows, key=lambda r: order.get(group_of(r.key), len(order)))
    return merged, list(old.get("commands") or [old.get("command", "?")])


def run_groups(groups: list[str], quick: bool) -> list[Row]:
    fns = group_fns(quick)
    rows: list[Row] = []
    for g in groups:
        t0 = time.perf_counter()
        print(f"[benchmarks] {g} ...", file=sys.stderr, flush=True)
        try:
            rows += fns[g]()
        except Exception as exc:  # noqa: BLE001 - one broken group still leaves the others' rows
            traceback.print_exc()
            rows.append(missing_row(f"{g}.error", f"{g} benchmarks", "error", f"{type(exc).__name__}: {exc}"[-800:]))
        print(f"[benchmarks] {g} done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return rows


def torch_version() -> str | None:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (CI smoke: the harness only)")
    ap.add_argument("--gpu", action="store_true", help="the GPU rows (needs CUDA)")
    ap.add_argument("--compile", action="store_true", help="GPU mode: torch.compile the model")
    ap.add_argument("--only", help=f"comma-separated groups of {','.join(CPU_GROUPS)}")
    ap.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/<host>-<date>[-quick|-gpu].json)")
    ap.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    args = ap.parse_args(argv)

    start = machine_info()
    t0 = time.perf_counter()
    if args.gpu:
        from benchmarks import bench_gpu

        try:
            rows = bench_gpu.measure(args.quick, args.compile)
        except bench_gpu.NoGpu as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        mode = "gpu"
    else:
        groups = [g.strip() for g in args.only.split(",")] if args.only else list(CPU_GROUPS)
        unknown = [g for g in groups if g not in CPU_GROUPS]
        if unknown:
            ap.error(f"--only {','.join(unknown)}: unknown group; choose from {','.join(CPU_GROUPS)}")
        rows = run_groups(groups, args.quick)
        mode = "cpu"
    suffix = ("-gpu" if args.gpu else "") + ("-quick" if args.quick else "")
    out = args.out or default_results_path(suffix)
    earlier: list[str] = []
    if args.only and not args.gpu:
        rows, earlier = merge_previous(out, rows, groups, mode, args.quick)
    end = machine_info()
    load = "->".join(f"{m['loadavg_1_5_15'][0]:.1f}" for m in (start, end) if m.get("loadavg_1_5_15"))
    title = (f"hpc_ft benchmarks ({mode}{', quick' if args.quick else ''}) on {start['host']} "
             f"({start['cpus']} CPUs, {start['cpu_model']}), load {load or '?'}, {start['date']}")
    print_rich_table(rows, title)
    table = markdown_table(rows)
    cmd = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    payload = {"command": cmd.strip(), "commands": [*earlier, cmd.strip()], "mode": mode, "quick": args.quick,
               "machine": start,
               "loadavg_end": end.get("loadavg_1_5_15"), "torch": torch_version(),
               "elapsed_s": time.perf_counter() - t0, "rows": [r.to_dict() for r in rows], "markdown": table}
    if args.gpu:
        import torch

        payload["gpu"] = torch.cuda.get_device_name(0)
    write_json(out, payload)
    cmds = ", ".join(f"`{c}`" for c in payload["commands"])
    write_text_atomic(out.with_suffix(".md"), f"{title}\n\nCommands: {cmds}\n\n{table}\n")
    print(f"wrote {out} (and {out.with_suffix('.md').name})")
    verdicts = [r.verdict() for r in rows]
    if "error" in verdicts or (args.check and "miss" in verdicts):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
