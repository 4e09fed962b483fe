"""Crafted run records for tests, the notebook's test and benchmarks: series files in the real telemetry format,
NodeReports, and a job.yaml, with chosen utilization, memory and power per GPU.

Values are deterministic (seeded noise around the chosen levels), written in large numpy chunks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hpc_ft.telemetry.records import GPU_METRICS, SeriesFile, columns, encode_header, gpu_col, record_dtype
from hpc_ft.telemetry.sampler import report_columns
from hpc_ft.telemetry.summary import BucketMeans, NodeSummary

CHUNK = 65536


@dataclass
class GpuProfile:
    """One GPU's levels over the run (noise is added around them)."""

    util_pct: float = 90.0
    mem_used_gb: float = 40.0
    mem_total_gb: float = 80.0
    power_w: float = 500.0
    power_limit_w: float = 700.0
    name: str = "NVIDIA H100 80GB HBM3"
    energy_counter: bool = True


@dataclass
class NodeProfile:
    gpus: list[GpuProfile] = field(default_factory=list)
    job_rss_gb: float = 6.0
    job_cpu_cores: float = 2.0
    cpu_util_pct: float = 40.0
    host_mem_total_gb: float = 512.0


def _fill(rec: np.ndarray, start: int, t0: float, interval_s: float, prof: NodeProfile,
          rng: np.random.Generator) -> None:
    n = len(rec)
    i = np.arange(start, start + n)
    rec["t"] = t0 + i * interval_s
    noise = lambda scale: rng.normal(0.0, scale, n).astype(np.float32)  # noqa: E731
    rec["cost_ms"] = 0.3 + np.abs(noise(0.05))
    rec["cpu_util_pct"] = np.clip(prof.cpu_util_pct + noise(3), 0, 100)
    rec["load1"] = prof.job_cpu_cores + np.abs(noise(0.1))
    rec["mem_used_gb"] = prof.job_rss_gb + 2.0
    rec["job_rss_gb"] = np.clip(prof.job_rss_gb * (0.8 + 0.2 * np.minimum(1.0, i / 60.0)), 0, None)
    rec["job_cpu_cores"] = np.clip(prof.job_cpu_cores + noise(0.1), 0, None)
    for s, g in enumerate(prof.gpus):
        busy = g.util_pct > 0
        rec[gpu_col(s, "util_pct")] = np.clip(g.util_pct + noise(2.0 if busy else 0.0), 0, 100)
        rec[gpu_col(s, "mem_util_pct")] = np.clip(g.util_pct * 0.4 + noise(1.0 if busy else 0.0), 0, 100)
        rec[gpu_col(s, "mem_used_gb")] = g.mem_used_gb
        rec[gpu_col(s, "job_mem_gb")] = max(0.0, g.mem_used_gb - 0.5)
        power = np.clip(g.power_w + noise(5.0), 0, g.power_limit_w)
        rec[gpu_col(s, "power_w")] = power
        # The counter integrates the constant level exactly, so tests can hand-compute the energy.
        rec[gpu_col(s, "energy_j")] = (i * interval_s * g.power_w) if g.energy_counter else np.nan
        rec[gpu_col(s, "temp_c")] = 40 + g.util_pct * 0.35
        rec[gpu_col(s, "sm_clock_mhz")] = 1980.0 if busy else 345.0


def write_node_series(path: Path, prof: NodeProfile, rows: int, t0: float = 1.7e9, interval_s: float = 1.0,
                      seed: int = 0, idle_util_pct: float = 5.0) -> Path:
    """A series file of ``rows`` samples of ``prof``, in the sampler's format."""
    gpus = [{"index": s, "uuid": f"GPU-{seed:04d}-{s:04d}", "name": g.name, "mem_total_gb": g.mem_total_gb,
             "power_limit_w": g.power_limit_w} for s, g in enumerate(prof.gpus)]
    header = {"version": 1, "host": {"name": f"synthetic{seed}", "cpus": 64, "mem_total_gb": prof.host_mem_total_gb},
              "node_rank": seed, "interval_s": interval_s, "idle_util_pct": idle_util_pct, "gpus": gpus,
              "nvml": bool(gpus), "t0": t0, "columns": columns(len(gpus))}
    dtype = record_dtype(header["columns"])
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(encode_header(header))
        for start in range(0, rows, CHUNK):
            rec = np.zeros(min(CHUNK, rows - start), dtype=dtype)
            for m in GPU_METRICS:  # absent GPU metrics stay missing
                for s in range(len(gpus)):
                    rec[gpu_col(s, m)] = np.nan
            _fill(rec, start, t0, interval_s, prof, rng)
            f.write(rec.tobytes())
    return path


def node_telemetry(path: Path, max_points: int = 600) -> dict[str, Any]:
    """What NodeSampler.stop() would have returned for this series file (summary + bounded series)."""
    sf = SeriesFile(path)
    h = sf.header
    summ = NodeSummary(h["gpus"], h["idle_util_pct"], h["interval_s"], host=h["host"])
    bm = BucketMeans(report_columns(sf.n_gpus), sf.rows, max_points)
    for chunk in sf.chunks():
        summ.add_chunk(chunk)
        bm.add_chunk(chunk)
    return {"version": 1, "series_path": str(path), "nvml": sf.n_gpus > 0, "notices": [], "sample_errors": 0,
            "summary": summ.to_dict(), "series": bm.series()}


def synthetic_run(run_dir: str | Path, profiles: list[NodeProfile], seconds: float, interval_s: float = 1.0,
                  overrides: list[str] | None = None, train: dict[str, Any] | None = None,
                  exit_codes: list[int] | None = None, node_telemetry_in_report: bool = True) -> Path:
    """A finished run dir: job.yaml (composed from conf/ with ``overrides``), per node a series file and a
    NodeReport (node_{r}.json) with ``train`` metrics. Returns the run dir."""
    from hpc_ft.config.compose import compose_conf
    from hpc_ft.submit.executors import resolve
    from hpc_ft.node.result import PREEMPTED_EXIT_CODE, NodeReport

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ov = list(overrides or [])
    spec = resolve(compose_conf(ov, run_dir=run_dir), ov)
    spec.save()
    rows = max(1, int(round(seconds / interval_s)))
    for r, prof in enumerate(profiles):
        path = write_node_series(run_dir / "nodes" / f"node{r}" / "telemetry.bin", prof, rows,
                                 interval_s=interval_s, seed=r, idle_util_pct=spec.conf.telemetry.idle_util_pct)
        code = exit_codes[r] if exit_codes else 0
        rep = NodeReport(host=f"synthetic{r}", node_rank=r, job_id="synthetic", exit_code=code,
                         wall_s=rows * interval_s, train=dict(train or {}),
                         telemetry=node_telemetry(path) if node_telemetry_in_report else {},
                         requeued=code == PREEMPTED_EXIT_CODE)
        rep.save(run_dir / "nodes" / f"node_{r}.json")
    return run_dir


def remove_series(run_dir: str | Path) -> None:
    """Delete every series file (the run as seen on a submitter without a shared filesystem)."""
    for p in Path(run_dir).glob("nodes/node*/telemetry*.bin"):
        os.unlink(p)
