"""PNG plots of a run: utilization, memory and power over time, per GPU and per node, and the host.

Uses matplotlib's object API with the Agg canvas (no pyplot, no display needed); each file is written
to a temporary name and renamed, so a reader never sees half a PNG.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hpc_ft.report.build import RunReport
from hpc_ft.rundir.atomic import atomic_write

MAX_NODE_PANELS = 8  # above this, one panel with one line per node (its GPUs' mean)

GPU_PLOTS = {  # file stem -> (column metric, y label)
    "utilization": ("util_pct", "GPU utilization (%)"),
    "memory": ("mem_used_gb", "GPU memory used (GiB)"),
    "power": ("power_w", "GPU power (W)"),
}
PERCENT_METRICS = {"util_pct"}  # drawn on a fixed 0-100% axis


def percent_axis(ax) -> None:
    """Fix ``ax`` to 0-100%: matplotlib would zoom on the data's range (97.5-100% for a busy CPU), making a
    fraction of a percent of noise look like large swings."""
    ax.set_ylim(0, 100)
    ax.set_yticks([0, 25, 50, 75, 100])


def quiet_matplotlib() -> None:
    """Keep matplotlib's INFO records off the console: under Hydra's job logging (root logger at INFO) the first
    plot on a machine printed "[matplotlib.font_manager][INFO] - generated new fontManager" after the run report.
    Its warnings still show; a level the user set on the "matplotlib" logger is kept."""
    lg = logging.getLogger("matplotlib")
    if lg.level == logging.NOTSET:
        lg.setLevel(logging.WARNING)


def _minutes(rr: RunReport) -> tuple[dict[int, list[float]], float]:
    starts = [s["t"][0] for s in rr.series.values() if s.get("t") and s["t"][0] is not None]
    t0 = min(starts) if starts else 0.0
    return {r: [((t if t is not None else float("nan")) - t0) / 60 for t in s.get("t", [])]
            for r, s in rr.series.items()}, t0


def _vals(col: list[float | None] | None, n: int) -> list[float]:
    if col is None:
        return [float("nan")] * n
    return [float("nan") if v is None else v for v in col]


def _gpu_slots(series: dict[str, Any]) -> list[int]:
    return sorted({int(c[1:].split(".", 1)[0]) for c in series if c.startswith("g") and "." in c})


def _save(fig: Any, path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    atomic_write(path, lambda f: fig.savefig(f, dpi=100, format="png"))
    return path


def gpu_figure(rr: RunReport, metric: str, ylabel: str):
    """One panel per node with a line per GPU (or one line per node on large runs)."""
    from matplotlib.figure import Figure

    xs, _ = _minutes(rr)
    ranks = [r for r in sorted(rr.series) if _gpu_slots(rr.series[r])]
    per_node = len(ranks) <= MAX_NODE_PANELS
    panels = max(1, len(ranks)) if per_node else 1
    fig = Figure(figsize=(10, 2.4 * panels + 0.6), layout="constrained")
    axes = fig.subplots(panels, 1, squeeze=False, sharex=True)[:, 0]
    cap = {(g.node, g.slot): g.mem_total_gb for g in rr.gpus}
    index = {(g.node, g.slot): g.index for g in rr.gpus}
    for i, r in enumerate(ranks):
        s, x = rr.series[r], xs[r]
        slots = _gpu_slots(s)
        if per_node:
            ax = axes[i]
            for slot in slots:
                line, = ax.plot(x, _vals(s.get(f"g{slot}.{metric}"), len(x)), lw=1,
                                label=f"GPU {index.get((r, slot), slot)}")
                if metric == "mem_used_gb" and cap.get((r, slot)):
                    ax.axhline(cap[(r, slot)], color=line.get_color(), ls="--", lw=0.8)
            ax.set_title(f"node {r}", fontsize=9, loc="left")
            ax.legend(fontsize=7, ncol=min(8, len(slots)), loc="upper right")
        else:
            cols = [_vals(s.get(f"g{slot}.{metric}"), len(x)) for slot in slots]
            mean = [sum(v) / len(v) for v in zip(*cols)]
            axes[0].plot(x, mean, lw=0.7)
            axes[0].set_title(f"{len(ranks)} nodes, mean over each node's GPUs", fontsize=9, loc="left")
        (axes[i] if per_node else axes[0]).set_ylabel(ylabel, fontsize=8)
    if metric in PERCENT_METRICS:
        for ax in axes:
            percent_axis(ax)
    axes[-1].set_xlabel("minutes since the run started")
    return fig


def host_figure(rr: RunReport):
    """CPU utilization and the job's resident memory, one line per node."""
    from matplotlib.figure import Figure

    xs, _ = _minutes(rr)
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax_cpu, ax_mem = fig.subplots(2, 1, sharex=True)
    many = len(rr.series) > MAX_NODE_PANELS
    for r in sorted(rr.series):
        s, x = rr.series[r], xs[r]
        ax_cpu.plot(x, _vals(s.get("cpu_util_pct"), len(x)), lw=0.8, label=f"node {r}")
        rss = s.get("job_rss_gb")
        ax_mem.plot(x, _vals(rss if rss and any(v is not None for v in rss) else s.get("mem_used_gb"), len(x)),
                    lw=0.8, label=f"node {r}")
    mem_gb = (rr.job.get("resources") or {}).get("mem_gb")
    if mem_gb:
        ax_mem.axhline(mem_gb, color="grey", ls="--", lw=0.8, label="requested mem_gb")
    ax_cpu.set_ylabel("host CPU (%)")
    percent_axis(ax_cpu)
    ax_mem.set_ylabel("job resident memory (GiB)")
    ax_mem.set_xlabel("minutes since the run started")
    if not many:
        ax_cpu.legend(fontsize=7)
        ax_mem.legend(fontsize=7)
    return fig


def write_plots(rr: RunReport, out_dir: str | Path) -> list[Path]:
    """Write utilization.png, memory.png, power.png (when a GPU was sampled) and host.png."""
    quiet_matplotlib()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if not rr.series:
        return written
    if any(_gpu_slots(s) for s in rr.series.values()):
        for stem, (metric, ylabel) in GPU_PLOTS.items():
            written.append(_save(gpu_figure(rr, metric, ylabel), out / f"{stem}.png"))
    written.append(_save(host_figure(rr), out / "host.png"))
    return written
