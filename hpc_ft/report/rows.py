"""The rows of a RunReport: one per GPU and one per node, typed (report.json holds them as JSON objects)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GpuRow:
    """One GPU of a run: what it was, how busy, how full, how much power and energy (None: not sampled)."""

    node: int  # node rank
    slot: int  # sampling slot on its node (index into the node's GPU columns)
    index: int | None  # the GPU's index as NVML numbers it
    name: str | None
    uuid: str | None
    util_mean_pct: float | None
    util_p50_pct: float | None
    util_p95_pct: float | None
    mem_util_mean_pct: float | None
    idle_fraction: float | None  # share of samples below telemetry.idle_util_pct
    idle: bool  # idle for at least build.IDLE_MOST_FRACTION of the run
    mem_peak_gb: float | None
    mem_total_gb: float | None
    mem_peak_pct: float | None
    job_mem_peak_gb: float | None  # the job's own processes' memory on this GPU
    power_mean_w: float | None
    power_max_w: float | None
    power_limit_w: float | None
    energy_kwh: float | None
    energy_source: str | None  # "counter" | "power" (integrated from sampled power)
    temp_max_c: float | None
    sm_clock_mean_mhz: float | None
    missing: list[str] = field(default_factory=list)  # metrics this GPU never gave
    gaps: list[str] = field(default_factory=list)  # metrics sampled only part of the time
    lost: bool = False  # the GPU was lost mid-run
    dropped: list[str] = field(default_factory=list)  # metrics NVML stopped giving mid-run


@dataclass
class NodeRow:
    """One node of a run: outcome, host use, its GPUs in sum, training throughput."""

    node: int  # node rank
    host: str | None
    status: str  # ok | preempted (stopped for preemption; the results table says the same) | failed | running (no
    # report yet, its job runs) | missing (no report)
    exit_code: int | None
    wall_s: float | None
    sampled_s: float | None
    samples: int
    source: str  # where the telemetry came from: series | node report | none
    cpu_util_mean_pct: float | None
    load1_max: float | None
    host_mem_peak_gb: float | None
    host_mem_total_gb: float | None
    job_rss_peak_gb: float | None
    job_cpu_cores_mean: float | None
    job_cpu_cores_p95: float | None
    gpus: int
    idle_gpus: int
    gpu_util_mean_pct: float | None
    gpu_mem_peak_gb: float | None
    energy_kwh: float | None
    sampler_cost_ms: float | None
    samples_per_s: float | None
    tokens_per_s: float | None
    steps: int | None
    notes: list[str] = field(default_factory=list)
    lost_gpus: list[int] = field(default_factory=list)  # slots of GPUs lost mid-run
