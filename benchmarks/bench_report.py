"""Report over synthetic records of 64 nodes x 8 GPUs x 24 h at 1 Hz: goal <= 60 s and <= 2 GiB peak RSS.

The series files (about 1.6 GB) are generated once into a temporary directory; then the report (load +
build + render + report.json + PNG plots) runs in a fresh subprocess, whose wall time and peak RSS are
measured. The baseline, in the same run, is a raw numpy pass over the same files (read every record and
take each column's mean), the least any report must do.

    python benchmarks/bench_report.py            # the full size
    python benchmarks/bench_report.py --quick    # 4 nodes x 8 GPUs x 1 h (smoke run)
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPORT = """
import sys
from rich.console import Console
from hpc_ft import report
rr = report.build_report(*report.load_run(sys.argv[1]))
Console(file=open("/dev/null", "w"), width=200).print(report.render_text(rr))
report.write_report(rr, sys.argv[1])
print(len(rr.nodes), len(rr.gpus))
"""

RAW = """
import sys
from pathlib import Path
import numpy as np
from hpc_ft.telemetry.records import SeriesFile
n = 0
for p in sorted(Path(sys.argv[1]).glob("nodes/node*/telemetry.bin")):
    sf = SeriesFile(p)
    for chunk in sf.chunks():
        for c in sf.cols:
            np.nanmean(chunk[c])
        n += len(chunk)
print(n)
"""


def measure(code: str, run_dir: Path) -> tuple[float, float, str]:
    """(wall s, peak RSS GiB, stdout) of ``code`` in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code, str(run_dir)], capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-3000:])
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # ru_maxrss of children is the maximum over all waited-for children: run the heavier one last or alone.
    return wall, max(peak_kib, before) / 2**20, res.stdout.strip()


def generate(run_dir: Path, nodes: int, gpus: int, seconds: int) -> float:
    from hpc_ft.testing.synthetic import GpuProfile, NodeProfile, synthetic_run

    t0 = time.perf_counter()
    profiles = [NodeProfile(gpus=[GpuProfile(util_pct=0.0 if (n + g) % 7 == 0 else 85.0) for g in range(gpus)])
                for n in range(nodes)]
    synthetic_run(run_dir, profiles, seconds=seconds,
                  overrides=["resources=gpu", "executor=slurm", f"resources.nodes={nodes}",
                             f"resources.gpus_per_node={gpus}", f"train.global_batch_size={nodes * gpus * 2}",
                             "resources.timeout_min=2880"],
                  train={"samples_per_s": 1000.0, "flops_per_sample": 1e12}, node_telemetry_in_report=False)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="4 nodes x 8 GPUs x 1 h")
    ap.add_argument("--keep", type=Path, help="generate into (or reuse) this directory instead of a temp dir")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    nodes, gpus, seconds = (4, 8, 3600) if args.quick else (64, 8, 24 * 3600)
    tmp = None
    run_dir = args.keep
    if run_dir is None:
        tmp = tempfile.mkdtemp(prefix="hpc_ft_bench_report_")
        run_dir = Path(tmp) / "run"
    try:
        gen_s = None
        if not (run_dir / "job.yaml").exists():
            gen_s = generate(run_dir, nodes, gpus, seconds)
        size_gb = sum(p.stat().st_size for p in run_dir.glob("nodes/node*/telemetry.bin")) / 1e9
        raw_s, raw_gib, raw_out = measure(RAW, run_dir)
        rep_s, rep_gib, rep_out = measure(REPORT, run_dir)
        rows = nodes * seconds
        result = {"nodes": nodes, "gpus_per_node": gpus, "hours": seconds / 3600, "node_samples": rows,
                  "series_gb": round(size_gb, 3), "generate_s": gen_s, "raw_numpy_pass_s": round(raw_s, 2),
                  "report_s": round(rep_s, 2), "ratio_vs_raw": round(rep_s / raw_s, 2),
                  "report_peak_rss_gib": round(rep_gib, 3), "report_out": rep_out,
                  "goal": "report <= 60 s and <= 2 GiB peak RSS (full size)",
                  "met": rep_s <= 60 and rep_gib <= 2}
        print(f"### bench_report ({nodes} nodes x {gpus} GPUs x {seconds / 3600:g} h at 1 Hz, "
              f"{size_gb:.2f} GB of series)\n")
        print("| measurement | value | goal |\n| --- | ---: | --- |")
        print(f"| report (load + summary + render + JSON + PNG) | {rep_s:.1f} s | <= 60 s |")
        print(f"| raw numpy pass over the same files (baseline) | {raw_s:.1f} s | - |")
        print(f"| ratio report / raw pass | {rep_s / raw_s:.2f}x | - |")
        print(f"| report peak RSS | {rep_gib:.2f} GiB | <= 2 GiB |")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(result, indent=1))
        return 0 if result["met"] or args.quick else 1
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
