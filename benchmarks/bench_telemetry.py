"""Training step time with the node sampler at 1 Hz against telemetry off: goal <= 1% slower.

As in a NodeTask, the sampler runs in its own process beside the training process and samples it (its
RSS and CPU through /proc, and on a GPU machine every visible GPU through NVML). The training side is a
fixed PyTorch MLP step using every CPU thread, so on a CPU-only machine the sampler competes with it for
the cores (the worst case). Blocks with and without the sampler alternate; the result is the ratio of the
median step times over all blocks. ``--in-process`` runs the sampler as a thread of the training process
instead (GIL contention: an upper bound, not how NodeTask runs it).

    python benchmarks/bench_telemetry.py            # 6 blocks x 20 s per side
    python benchmarks/bench_telemetry.py --quick    # 2 blocks x 4 s per side
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLER = """
import json, os, sys
from hpc_ft.telemetry import NodeSampler
pid = int(sys.argv[2])
s = NodeSampler(out_dir=sys.argv[1], interval_s=float(sys.argv[3]), pids=lambda: [pid])
s.start()
print("ready", flush=True)
sys.stdin.readline()
out = s.stop()
print(json.dumps({"sampler": out["summary"]["sampler"], "samples": out["summary"]["samples"],
                  "gpus": len(out["summary"]["gpus"])}), flush=True)
"""


class ExternalSampler:
    """The sampler in its own process, sampling ``pid`` (the NodeTask arrangement)."""

    def __init__(self, out_dir: Path, pid: int, interval_s: float):
        self.proc = subprocess.Popen([sys.executable, "-c", SAMPLER, str(out_dir), str(pid), str(interval_s)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()  # blocks until the first sample is written
        if line != "ready":
            raise RuntimeError(f"sampler did not start: {line!r}")

    def stop(self) -> dict:
        out, _ = self.proc.communicate("stop\n", timeout=60)
        return json.loads(out.strip().splitlines()[-1])


class InProcessSampler:
    def __init__(self, out_dir: Path, pid: int, interval_s: float):
        from hpc_ft.telemetry import NodeSampler

        self.s = NodeSampler(out_dir=out_dir, interval_s=interval_s, pids=lambda: [pid]).start()

    def stop(self) -> dict:
        out = self.s.stop()
        return {"sampler": out["summary"]["sampler"], "samples": out["summary"]["samples"],
                "gpus": len(out["summary"]["gpus"])}


def make_step():
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 512)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(64, 512, device=dev)

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        if dev == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return step, dev


def block(step, seconds: float) -> list[float]:
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        times.append(step())
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--block-s", type=float, default=20.0)
    ap.add_argument("--interval-s", type=float, default=1.0)
    ap.add_argument("--in-process", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    blocks, block_s = (2, 4.0) if args.quick else (args.blocks, args.block_s)
    step, dev = make_step()
    block(step, 2.0)  # warm-up: allocator, thread pool
    on, off, info = [], [], []
    sampler_cls = InProcessSampler if args.in_process else ExternalSampler
    with tempfile.TemporaryDirectory(prefix="hpc_ft_bench_tel_") as tmp:
        for b in range(blocks):
            for mode in (("on", "off") if b % 2 == 0 else ("off", "on")):  # alternate which side goes first
                if mode == "off":
                    off.extend(block(step, block_s))
                    continue
                s = sampler_cls(Path(tmp) / f"b{b}", os.getpid(), args.interval_s)
                on.extend(block(step, block_s))
                info.append(s.stop())
    med_on, med_off = statistics.median(on), statistics.median(off)
    ratio = med_on / med_off
    costs = [i["sampler"]["mean_cost_ms"] for i in info if i["sampler"]["mean_cost_ms"] is not None]
    result = {"device": dev, "cpus": os.cpu_count(), "arrangement": "in-process" if args.in_process else "separate",
              "interval_s": args.interval_s, "blocks": blocks, "block_s": block_s,
              "steps_on": len(on), "steps_off": len(off), "median_step_on_s": med_on, "median_step_off_s": med_off,
              "ratio": ratio, "sampler_mean_cost_ms": statistics.fmean(costs) if costs else None,
              "gpus_sampled": info[0]["gpus"] if info else 0, "goal": "ratio <= 1.01", "met": ratio <= 1.01}
    print(f"### bench_telemetry ({dev}, {os.cpu_count()} CPUs, sampler {result['arrangement']}, "
          f"{args.interval_s:g} s interval, {blocks} alternating blocks x {block_s:g} s per side)\n")
    print("| measurement | telemetry on | telemetry off | ratio | goal |\n| --- | ---: | ---: | ---: | --- |")
    print(f"| median training step | {med_on * 1e3:.3f} ms | {med_off * 1e3:.3f} ms | {ratio:.4f}x | <= 1.01x |")
    print(f"\nsampler's own cost per sample: {result['sampler_mean_cost_ms']:.2f} ms "
          f"({result['gpus_sampled']} GPU(s) sampled)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
