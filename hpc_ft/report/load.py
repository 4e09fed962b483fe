"""Read a finished run: its JobSpec, every node's NodeReport, and the nodes' series files (streamed).

A node's telemetry comes from its series files when the run dir holds them (shared filesystem; every
sample, requeued segments merged), else from the summary and bounded series its NodeReport carried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.rundir.records import NodeReport
from hpc_ft.telemetry.records import SeriesFile
from hpc_ft.telemetry.sampler import report_columns
from hpc_ft.telemetry.summary import BucketMeans, NodeSummary

PLOT_POINTS = 1000  # points per node kept for plots when reading full series files


@dataclass
class NodeData:
    """Everything known about one node of a run."""

    rank: int
    report: NodeReport | None = None
    summary: dict[str, Any] | None = None  # NodeSummary.to_dict() format
    series: dict[str, list[float | None]] | None = None  # bounded: column -> bucket means
    source: str = "none"  # "series" (files in the run dir) | "node report" | "none"
    notes: list[str] = field(default_factory=list)


def load_run(run_dir: str | Path) -> tuple[Path, JobSpec | None, list[NodeData]]:
    """(run dir, its JobSpec or None, one NodeData per node) for ``build_report(*load_run(d))``."""
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    rd = RunDir(run_dir)
    spec = None
    if rd.spec.exists():
        spec = JobSpec.load(rd.spec)
    ranks: set[int] = set(range(spec.nodes)) if spec else set()
    ranks |= rd.node_ranks()
    return run_dir, spec, [load_node(rd, r) for r in sorted(ranks)]


def load_node(rd: RunDir, rank: int, plot_points: int = PLOT_POINTS) -> NodeData:
    """One node: its NodeReport (if saved; an earlier version's too) and telemetry, preferring the full
    series files."""
    nd = NodeData(rank=rank)
    rp = rd.node_report(rank)
    if rp.exists():
        try:
            nd.report = NodeReport.load(rp)
        except (OSError, ValueError, TypeError) as exc:
            nd.notes.append(f"unreadable node report {rp.relative_to(rd.path)}: {exc}")
    files = rd.node(rank).series_files()
    if files:
        _from_series(nd, files, plot_points)
    if nd.summary is None and nd.report is not None and nd.report.telemetry.get("summary"):
        nd.summary = nd.report.telemetry["summary"]
        nd.series = nd.report.telemetry.get("series")
        nd.source = "node report"
    if nd.report is not None:
        nd.notes.extend(nd.report.telemetry.get("notices", []))
    if nd.report is None and nd.summary is None:
        nd.notes.append("no node report and no telemetry: the node never started or its files were lost")
    return nd


def _from_series(nd: NodeData, files: list[Path], plot_points: int) -> None:
    """Stream every segment of a node (a requeued node has several) into one summary and plot series."""
    merged: NodeSummary | None = None
    series: dict[str, list[float | None]] = {}
    opened = []
    for p in files:
        try:
            opened.append(SeriesFile(p))
        except (OSError, ValueError) as exc:
            nd.notes.append(f"skipped {p.name}: {exc}")
    per_segment = max(2, plot_points // max(1, len(opened)))
    for sf in opened:
        h = sf.header
        summ = NodeSummary(h.get("gpus", []), h.get("idle_util_pct", 5.0), h.get("interval_s", 1.0),
                           host=h.get("host"))
        cols = [c for c in report_columns(sf.n_gpus) if c in sf.cols]
        bm = BucketMeans(cols, sf.rows, per_segment)
        for chunk in sf.chunks():
            summ.add_chunk(chunk)
            bm.add_chunk(chunk)
        if summ.samples == 0:
            continue
        if merged is None:
            merged = summ
        else:
            summ.merge(merged)  # the later segment absorbs the earlier ones (energy counters restart)
            merged = summ
        _append_series(series, bm.series())
    if merged is not None:
        nd.summary = merged.to_dict()
        nd.summary["segments"] = len(opened)
        nd.series = series
        nd.source = "series"


def _append_series(acc: dict[str, list[float | None]], seg: dict[str, list[float | None]]) -> None:
    """Append one segment's points; a column only one side has is padded with gaps (None)."""
    before, n = len(acc.get("t", [])), len(seg.get("t", []))
    for c in set(acc) | set(seg):
        acc.setdefault(c, [None] * before).extend(seg.get(c, [None] * n))


def finite(x: Any) -> float | None:
    """``x`` as a float, or None when missing/NaN."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def find_sweep_jobs(path: str | Path) -> list[Path]:
    """Run dirs of a Hydra multirun (subdirs holding job.yaml, the nearest level that has any), numerically
    ordered; [] for a run dir."""
    # multirun/DATE/TIME/N: the sweep dir itself, or up to two levels above it
    return SweepDir(path).job_run_dirs(max_depth=3)
