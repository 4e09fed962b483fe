"""RunReport: did the job use what it asked for? Pure: built from loaded records, no I/O."""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.report.advice import Advice, advise, next_command
from hpc_ft.report.load import NodeData, finite
from hpc_ft.rundir.records import EVAL_METRICS
from hpc_ft.rundir.lock import RunDirLock
from hpc_ft.report.peaks import peak_tflops
from hpc_ft.report.rows import GpuRow, NodeRow
from hpc_ft.rundir.records import TrainResult

# A GPU counts as idle when it sat below telemetry.idle_util_pct for at least this share of the run.
IDLE_MOST_FRACTION = 0.8
RUN_REPORT_VERSION = 1  # report.json; before it carried a version it was the same shape
# The sampler's notices (hpc_ft.telemetry.nvml) when a GPU is lost or one of its metrics is dropped.
_LOST_RE = re.compile(r"^GPU (\d+) \(.*\) lost\b")
_DROPPED_RE = re.compile(r"^GPU (\d+) ([a-z_]+): ")


@dataclass
class RunReport:
    """The report of one run; ``to_dict`` is report.json (the plot series stay out of it)."""

    run_dir: str
    job: dict[str, Any]
    nodes: list[NodeRow]
    gpus: list[GpuRow]
    totals: dict[str, Any]
    throughput: dict[str, Any]
    advice: list[Advice]
    command: str | None  # the next submission with every advised override applied
    notes: list[str] = field(default_factory=list)
    evaluation: dict[str, float] = field(default_factory=dict)  # the task's eval metrics and baselines, by name
    # Every metric the run reported by name (its objective's, or a user's script's through its progress file).
    metrics: dict[str, float | None] = field(default_factory=dict)
    # peak tensor memory per worker: estimated before submission and measured by training (bytes, with sources)
    memory: dict[str, Any] = field(default_factory=dict)
    series: dict[int, dict[str, list[float | None]]] = field(default_factory=dict, repr=False)
    version: int = RUN_REPORT_VERSION

    @property
    def gpu_sampled(self) -> bool:
        return bool(self.gpus)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("series")
        d["advice"] = [asdict(a) for a in self.advice]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunReport":
        """A report read back from report.json (without its plot series). Raises TypeError on a field this
        version does not know, ValueError on a version it does not read."""
        if d.get("version", 1) != RUN_REPORT_VERSION:
            raise ValueError(f"report.json version {d.get('version')!r} is not {RUN_REPORT_VERSION}: "
                             f"run `hpc-ft report` again to rewrite it")
        return cls(**{**d, "nodes": [NodeRow(**n) for n in d["nodes"]], "gpus": [GpuRow(**g) for g in d["gpus"]],
                      "advice": [Advice(**a) for a in d["advice"]]})


def _stat(summary: dict | None, *path: str) -> float | None:
    node: Any = summary
    for p in path:
        if not isinstance(node, dict):
            return None
        node = node.get(p)
    return finite(node)


def _gpu_rows(nd: NodeData) -> list[GpuRow]:
    rows = []
    for slot, g in enumerate((nd.summary or {}).get("gpus", [])):
        idle_frac = finite(g.get("idle_fraction"))
        mem_peak, mem_total = _stat(g, "mem_used_gb", "max"), finite(g.get("mem_total_gb"))
        rows.append(GpuRow(
            node=nd.rank, slot=slot, index=g.get("index"), name=g.get("name"), uuid=g.get("uuid"),
            util_mean_pct=_stat(g, "util_pct", "mean"), util_p50_pct=_stat(g, "util_pct", "p50"),
            util_p95_pct=_stat(g, "util_pct", "p95"), mem_util_mean_pct=_stat(g, "mem_util_pct", "mean"),
            idle_fraction=idle_frac, idle=idle_frac is not None and idle_frac >= IDLE_MOST_FRACTION,
            mem_peak_gb=mem_peak, mem_total_gb=mem_total,
            mem_peak_pct=100 * mem_peak / mem_total if mem_peak is not None and mem_total else None,
            job_mem_peak_gb=_stat(g, "job_mem_gb", "max"),
            power_mean_w=_stat(g, "power_w", "mean"), power_max_w=_stat(g, "power_w", "max"),
            power_limit_w=finite(g.get("power_limit_w")),
            energy_kwh=finite(g.get("energy_kwh")), energy_source=g.get("energy_source"),
            temp_max_c=_stat(g, "temp_c", "max"), sm_clock_mean_mhz=_stat(g, "sm_clock_mhz", "mean"),
            missing=list(g.get("missing", [])), gaps=list(g.get("gaps", [])),
        ))
    for note in nd.notes:  # what the sampler said: a GPU lost mid-run, a metric NVML stopped giving
        m = _LOST_RE.match(note) or _DROPPED_RE.match(note)
        if m and int(m.group(1)) < len(rows):
            row = rows[int(m.group(1))]
            if m.re is _LOST_RE:
                row.lost = True
            elif m.group(2) not in row.dropped:
                row.dropped.append(m.group(2))
    return rows


def sampling_gaps(g: GpuRow) -> str:
    """What a GPU row's figures leave out, in words ('' when sampled throughout)."""
    parts = []
    if g.lost:
        parts.append("LOST mid-run: figures cover only the time before")
    if g.dropped:
        parts.append("not sampled after NVML refused: " + ", ".join(g.dropped))
    partly = [m for m in g.gaps if not g.lost]
    if partly:
        parts.append("partly sampled: " + ", ".join(partly))
    return "; ".join(parts)


def _node_row(nd: NodeData, gpus: list[GpuRow], running: bool = False) -> NodeRow:
    s, r = nd.summary or {}, nd.report
    utils = [g.util_mean_pct for g in gpus if g.util_mean_pct is not None]
    train = (r.train if r else None) or TrainResult(steps=None)  # none: its figures are None
    status = (("running" if running else "missing") if r is None else
              ("ok" if r.exit_code == 0 else ("preempted" if r.preempted else "failed")))
    energies = [g.energy_kwh for g in gpus if g.energy_kwh is not None]
    return NodeRow(
        node=nd.rank, host=(r.host if r else None) or (s.get("host_info") or {}).get("name"),
        status=status, exit_code=r.exit_code if r else None,
        wall_s=finite(r.wall_s) if r else finite(s.get("duration_s")),
        sampled_s=finite(s.get("duration_s")), samples=s.get("samples", 0), source=nd.source,
        cpu_util_mean_pct=_stat(s, "host", "cpu_util_pct", "mean"),
        load1_max=_stat(s, "host", "load1", "max"),
        host_mem_peak_gb=_stat(s, "host", "mem_used_gb", "max"),
        host_mem_total_gb=finite((s.get("host_info") or {}).get("mem_total_gb")),
        job_rss_peak_gb=_stat(s, "host", "job_rss_gb", "max"),
        job_cpu_cores_mean=_stat(s, "host", "job_cpu_cores", "mean"),
        job_cpu_cores_p95=_stat(s, "host", "job_cpu_cores", "p95"),
        gpus=len(gpus), idle_gpus=sum(g.idle for g in gpus),
        gpu_util_mean_pct=statistics.fmean(utils) if utils else None,
        gpu_mem_peak_gb=max((g.mem_peak_gb for g in gpus if g.mem_peak_gb is not None), default=None),
        energy_kwh=sum(energies) if energies else None,
        sampler_cost_ms=_stat(s, "sampler", "mean_cost_ms"),
        samples_per_s=finite(train.samples_per_s), tokens_per_s=finite(train.tokens_per_s),
        steps=train.steps, notes=list(dict.fromkeys(nd.notes)),
        lost_gpus=[g.slot for g in gpus if g.lost],
    )


def _median(vals: list[float | None]) -> float | None:
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def _throughput(spec: JobSpec | None, nodes: list[NodeData], gpus: list[GpuRow], conf_peak: float | None,
                n_gpus: int) -> dict[str, Any]:
    trains = [nd.report.train for nd in nodes if nd.report and nd.report.train]
    # Every node logs the same global step rate (train.global_batch_size counts all workers), so take the median.
    sps = _median([finite(t.samples_per_s) for t in trains])
    tps = _median([finite(t.tokens_per_s) for t in trains])
    fps = _median([finite(t.flops_per_sample) for t in trains])
    # The dtype trained in (precision=auto decides it on the nodes), else the configured one; a user's script has
    # none of its own to show (hpc_ft's precision setting is the loop's).
    precision = next((t.precision for t in trains if t.precision), None) or (
        spec.conf.precision.dtype if spec and not spec.runs_script else None)
    precision_reason = next((t.precision_reason for t in trains if t.precision_reason), None)
    name = next((g.name for g in gpus if g.name), None)
    # precision=auto with no trained dtype recorded (a result from before auto): the table's bf16 peak, as before.
    peak_dtype = precision if precision in ("fp32", "bf16", "fp16") else "bf16"
    peak, peak_src = (conf_peak, "telemetry.gpu_peak_tflops") if conf_peak else (
        peak_tflops(name, peak_dtype), f"table ({name}, {peak_dtype})" if name else None)
    achieved = fps * sps / 1e12 if fps and sps else None
    mfu = achieved / (peak * n_gpus) if achieved and peak and n_gpus else None
    why = None
    if mfu is None:
        why = ("no training metrics" if sps is None else "flops_per_sample unknown" if fps is None
               else "no GPU" if not n_gpus else "peak TFLOPS of this GPU unknown (set telemetry.gpu_peak_tflops)")
    return {"samples_per_s": sps, "tokens_per_s": tps, "flops_per_sample": fps, "achieved_tflops": achieved,
            "peak_tflops_per_gpu": peak, "peak_source": peak_src if peak else None, "gpus": n_gpus,
            "precision": precision, "mfu": mfu, "mfu_unavailable": why,
            **({"precision_reason": precision_reason} if precision_reason else {}),  # known since precision=auto
            "step_time_s": _median([finite(t.step_time_s) for t in trains]),
            "final_loss": next((t.final_loss for t in trains if t.final_loss is not None), None),
            "eval_accuracy": next((t.metric("eval_accuracy") for t in trains if t.metric("eval_accuracy") is not None),
                                  None)}


def evaluation(trains: list) -> dict[str, float]:
    """The task's final evaluation metrics and baselines (EVAL_METRICS that any node's result holds)."""
    out = {}
    for key, _, _ in EVAL_METRICS:
        value = next((t.metric(key) for t in trains if t.metric(key) is not None), None)
        if value is not None:
            out[key] = value
    return out


def _metrics(nodes: list[NodeData]) -> dict[str, float | None]:
    """The run's metrics by name from the first node that has any (every node reports the same global ones)."""
    trains = [nd.report.train for nd in nodes if nd.report and nd.report.train]
    return {k: finite(v) for k, v in next((t.metrics for t in trains if t.metrics), {}).items()}


def memory_figures(run_dir: str | Path, trains: list[TrainResult]) -> dict[str, Any]:
    """Peak tensor memory per worker: the estimate saved at submission (memory_estimate.json, if any) and the
    largest peak a node measured (TrainResult.peak_memory_bytes), in bytes; {} when neither exists."""
    import json

    from hpc_ft.rundir.layout import RunDir

    out: dict[str, Any] = {}
    path = RunDir(run_dir).memory_estimate
    if path.exists():
        try:
            est = json.loads(path.read_text())
            out["estimated_bytes"] = int(est["estimate"]["peak"])
            # what grows with the micro-batch: the right-sizing advice scales it (hpc_ft.report.advice)
            out["estimated_activation_bytes"] = int(est["estimate"].get("activations", 0)) + int(
                est["estimate"].get("temporaries", 0))
            out["usable_bytes"] = est.get("usable_bytes")
        except (ValueError, KeyError, TypeError):
            out["estimate_note"] = f"unreadable {path.name}"
    measured = [(t.peak_memory_bytes, t.peak_memory_source) for t in trains if t.peak_memory_bytes]
    if measured:
        peak, source = max(measured)
        out["measured_bytes"], out["measured_source"] = int(peak), source
    if out.get("estimated_bytes") and out.get("measured_bytes"):
        out["estimate_error"] = out["estimated_bytes"] / out["measured_bytes"] - 1
    return out


def build_report(run_dir: str | Path, spec: JobSpec | None, nodes: list[NodeData]) -> RunReport:
    """The run report of one run from its loaded records (see ``load_run``)."""
    gpu_rows = [row for nd in nodes for row in _gpu_rows(nd)]
    # A node without its report yet is running while its job is (the report of a run still going), else missing.
    running = any(nd.report is None for nd in nodes) and RunDirLock(Path(run_dir)).in_use()
    node_rows = [_node_row(nd, [g for g in gpu_rows if g.node == nd.rank], running) for nd in nodes]
    res = spec.conf.resources if spec else None
    tel = spec.conf.telemetry if spec else None
    walls = [n.wall_s for n in node_rows if n.wall_s is not None]
    wall_s = max(walls) if walls else None
    n_alloc = res.nodes * res.gpus_per_node if res else len(gpu_rows)
    wall_h = (wall_s or 0.0) / 3600
    busy_h = 0.0
    util_h = 0.0
    for g in gpu_rows:
        dur_h = (next(n.sampled_s for n in node_rows if n.node == g.node) or 0.0) / 3600
        if g.idle_fraction is not None:
            busy_h += dur_h * (1 - g.idle_fraction)
        if g.util_mean_pct is not None:
            util_h += dur_h * g.util_mean_pct / 100
    energies = [g.energy_kwh for g in gpu_rows if g.energy_kwh is not None]
    energy_kwh = sum(energies) if energies else None
    price_h = tel.price_per_gpu_hour if tel else 0.0
    price_kwh = tel.price_per_kwh if tel else 0.0
    requested_h = n_alloc * wall_h
    # A CPU-only job is costed in what it holds: node-hours at telemetry.price_per_node_hour.
    cpu_only = n_alloc == 0
    n_nodes = res.nodes if res else len(nodes)
    price_node_h = tel.price_per_node_hour if tel else 0.0
    totals = {
        "nodes": len(nodes), "nodes_requested": res.nodes if res else None,
        "gpus_requested": n_alloc, "gpus_sampled": len(gpu_rows),
        "idle_gpus": sum(g.idle for g in gpu_rows), "wall_s": wall_s,
        "gpu_hours_requested": requested_h,  # allocated GPUs x the run's wall time
        "gpu_hours_reserved": n_alloc * res.timeout_min / 60 if res else None,  # what the time limit held
        "gpu_hours_busy": busy_h if gpu_rows else None,  # GPU time above the idle threshold
        "gpu_hours_util": util_h if gpu_rows else None,  # utilization-weighted GPU time
        "energy_kwh": energy_kwh,
        "cost_gpu_hours": requested_h * price_h,
        "cost_energy": energy_kwh * price_kwh if energy_kwh is not None else None,
        # Sampled time can run past the wall time by an interval: idle cost is never below zero.
        "cost_idle": max(0.0, requested_h - busy_h) * price_h if gpu_rows else None,
        "price_per_gpu_hour": price_h, "price_per_kwh": price_kwh,
        "cpu_only": cpu_only,
        "node_hours_requested": n_nodes * wall_h if cpu_only else None,
        "node_hours_reserved": n_nodes * res.timeout_min / 60 if cpu_only and res else None,
        "cost_node_hours": n_nodes * wall_h * price_node_h if cpu_only else None,
        "price_per_node_hour": price_node_h if cpu_only else None,
    }
    totals["cost_total"] = (totals["cost_node_hours"] if cpu_only else totals["cost_gpu_hours"]) + (
        totals["cost_energy"] or 0.0)
    throughput = _throughput(spec, nodes, gpu_rows, tel.gpu_peak_tflops if tel else None, n_alloc)
    trains = [nd.report.train for nd in nodes if nd.report and nd.report.train]
    memory = memory_figures(run_dir, trains)
    advice = advise(spec, node_rows, gpu_rows, totals, memory) if spec else []
    notes = []
    if not gpu_rows:
        why = sorted({n for nd in nodes for n in nd.notes if "GPU" in n})
        notes.append("no GPU was sampled on any node; host metrics only" + (f" ({why[0]})" if why else ""))
    missing = [n.node for n in node_rows if n.status == "missing"]
    if missing:
        notes.append(f"node(s) {missing} sent no report")
    lost = [f"node {g.node} GPU {g.slot}" for g in gpu_rows if g.lost]
    if lost:
        notes.append(f"{', '.join(lost)} lost mid-run: utilization, idle time and energy of "
                     f"{'that GPU' if len(lost) == 1 else 'those GPUs'} cover only the time before (rows marked)")
    job = {"name": spec.conf.run.name if spec else None, "executor": spec.conf.executor.name if spec else None,
           "resources": {k: getattr(res, k) for k in ("nodes", "gpus_per_node", "workers_per_node", "gpu_type",
                                                        "cpus_per_task", "mem_gb", "timeout_min")} if res else None,
           "overrides": list(spec.overrides) if spec else [],
           "idle_util_pct": tel.idle_util_pct if tel else None}
    return RunReport(run_dir=str(run_dir), job=job, nodes=node_rows, gpus=gpu_rows, totals=totals,
                     throughput=throughput, advice=advice,
                     command=next_command(spec, advice) if spec and advice else None, notes=notes,
                     evaluation=evaluation([nd.report.train for nd in nodes if nd.report and nd.report.train]),
                     metrics=_metrics(nodes),
                     memory=memory,
                     series={nd.rank: nd.series for nd in nodes if nd.series})


def fmt_num(v: Any, spec: str = ".1f", unit: str = "") -> str:
    """Human formatting that shows '-' for missing values."""
    v = finite(v) if not isinstance(v, bool) else v
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    s = format(v, spec)
    if s.startswith("-") and not any(c in "123456789" for c in s.split("e")[0]):
        s = s[1:]  # no negative zero: "-0.00" reads as a loss where there is none
    return f"{s}{unit}"
