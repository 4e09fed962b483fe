"""hpc_ft's NVML sampler against nvidia-smi on a real GPU, idle and under a bf16 matmul load.

Run on a CUDA machine (benchmarks/gpu_check.sh does): samples the GPU with hpc_ft's NodeSampler every
0.5 s while this process first idles, then keeps the GPU busy, and reads nvidia-smi at the same moments.
Writes both readings side by side and a verdict per metric to ``--out`` (JSON); exit 1 when hpc_ft's
readings disagree with nvidia-smi beyond the tolerances below, 2 without a GPU.

    python benchmarks/nvml_check.py --out nvml.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SMI_FIELDS = ("utilization.gpu", "memory.used", "power.draw", "temperature.gpu")
# What "agrees" means: both tools read the same counters at slightly different moments.
TOLERANCE = {"mem_used_gb": 0.5, "power_w_ratio": 0.25, "temp_c": 3.0}


def smi(index: int) -> dict[str, float]:
    """nvidia-smi's reading of GPU ``index`` (util %, memory GiB, power W, temperature C)."""
    out = subprocess.run(["nvidia-smi", f"--id={index}", f"--query-gpu={','.join(SMI_FIELDS)}",
                          "--format=csv,noheader,nounits"], capture_output=True, text=True, check=True,
                         timeout=30).stdout.strip()
    util, mem_mib, power, temp = (float(x) if x.strip() not in ("[N/A]", "N/A") else float("nan")
                                  for x in out.split(","))
    return {"util_pct": util, "mem_used_gb": mem_mib / 1024, "power_w": power, "temp_c": temp}


def busy(stop: threading.Event) -> None:
    """bf16 matmuls back to back until ``stop`` (the GPU near 100% utilization)."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    while not stop.is_set():
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=6.0, help="per phase (idle, busy)")
    args = ap.parse_args(argv)
    import torch

    from hpc_ft.telemetry import NodeSampler, read_series

    if not (torch.cuda.is_available() and shutil.which("nvidia-smi")):
        print("error: needs a CUDA GPU and nvidia-smi", file=sys.stderr)
        return 2
    torch.cuda.init()
    index = int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0)
    tmp = Path(tempfile.mkdtemp(prefix="hpc_ft-nvml-check-"))
    sampler = NodeSampler(out_dir=tmp, interval_s=0.5, pids=lambda: [os.getpid()]).start()
    phases: dict[str, list[tuple[float, dict[str, float]]]] = {"idle": [], "busy": []}
    stop = threading.Event()
    for phase in ("idle", "busy"):
        worker = threading.Thread(target=busy, args=(stop,)) if phase == "busy" else None
        if worker:
            worker.start()
            time.sleep(1.0)  # let the load ramp before comparing (a settle time, not synchronisation)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            phases[phase].append((time.time(), smi(index)))
            time.sleep(0.5)
        if worker:
            stop.set()
            worker.join(timeout=60)
    telemetry = sampler.stop()
    header, rows = read_series(telemetry["series_path"])

    def ours_at(t: float) -> dict[str, float]:
        i = min(range(len(rows)), key=lambda k: abs(rows["t"][k] - t))
        return {m: float(rows[f"g0.{m}"][i]) for m in ("util_pct", "mem_used_gb", "power_w", "temp_c", "job_mem_gb")
                if f"g0.{m}" in rows.dtype.names}

    pairs = {p: [{"t": t, "nvidia_smi": s, "hpc_ft": ours_at(t)} for t, s in v] for p, v in phases.items()}
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else float("nan")  # noqa: E731
    checks = {}
    for p, v in pairs.items():
        mem = med([abs(x["hpc_ft"].get("mem_used_gb", float("nan")) - x["nvidia_smi"]["mem_used_gb"]) for x in v])
        temp = med([abs(x["hpc_ft"].get("temp_c", float("nan")) - x["nvidia_smi"]["temp_c"]) for x in v])
        power = med([abs(x["hpc_ft"].get("power_w", float("nan")) / x["nvidia_smi"]["power_w"] - 1) for x in v])
        util_ours = med([x["hpc_ft"].get("util_pct", float("nan")) for x in v])
        util_smi = med([x["nvidia_smi"]["util_pct"] for x in v])
        checks[p] = {"median_abs_mem_gb": mem, "median_abs_temp_c": temp, "median_power_rel": power,
                     "median_util_pct_hpc_ft": util_ours, "median_util_pct_smi": util_smi,
                     "ok": bool(mem <= TOLERANCE["mem_used_gb"] and temp <= TOLERANCE["temp_c"]
                                and power <= TOLERANCE["power_w_ratio"])}
    checks["busy"]["ok"] &= checks["busy"]["median_util_pct_hpc_ft"] >= 80  # the load shows as utilization
    result = {"gpu": header.get("gpus"), "notices": telemetry.get("notices"), "tolerance": TOLERANCE,
              "checks": checks, "pairs": pairs, "summary": telemetry.get("summary"),
              "date": time.strftime("%Y-%m-%d"), "torch": torch.__version__}
    args.out.write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps({"gpu": [g.get("name") for g in header.get("gpus", [])], "checks": checks}, indent=1))
    return 0 if all(c["ok"] for c in checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
