"""Terminal rendering of run and sweep reports (rich renderables; no printing here)."""

from __future__ import annotations

from typing import Any

from hpc_ft.report.build import RunReport, fmt_num, sampling_gaps
from hpc_ft.report.sweep_view import abbreviate, key_legend, shortest_keys, split_override
from hpc_ft.rundir.records import eval_summary
from hpc_ft.terminal import fmt_bytes

MAX_GPU_ROWS = 64  # a 64-node x 8-GPU run lists idle or notable GPUs beyond this, not all 512


def _of(a: Any, b: Any, unit: str, spec: str = ".1f") -> str:
    if a is None:
        return "-"
    return f"{fmt_num(a, spec)}/{fmt_num(b, spec)}{unit}" if b is not None else f"{fmt_num(a, spec)}{unit}"


def node_table(rr: RunReport):
    """The per-node table (also what the notebook shows)."""
    from rich.table import Table

    t = Table(title="per node", title_justify="left")
    for col in ("node", "host", "status", "wall s", "CPU%", "RSS/mem GiB", "cores", "GPUs", "util%", "idle",
                "GPU mem GiB", "kWh", "samples/s"):
        t.add_column(col, justify="left" if col in ("host", "status") else "right")
    mem_req = (rr.job.get("resources") or {}).get("mem_gb")
    for n in rr.nodes:
        lost = n.lost_gpus or []
        status = n.status + (f" (GPU {', '.join(map(str, lost))} lost)" if lost else "")
        t.add_row(str(n.node), str(n.host or "-"), status, fmt_num(n.wall_s, ".0f"),
                  fmt_num(n.cpu_util_mean_pct, ".0f"), _of(n.job_rss_peak_gb, mem_req, ""),
                  fmt_num(n.job_cpu_cores_mean, ".1f"), str(n.gpus), fmt_num(n.gpu_util_mean_pct, ".0f"),
                  str(n.idle_gpus) if n.gpus else "-", fmt_num(n.gpu_mem_peak_gb, ".1f"),
                  fmt_num(n.energy_kwh, ".3f"), fmt_num(n.samples_per_s, ".1f"))
    return t


def gpu_table(rr: RunReport):
    """The per-GPU table; on very large runs the idle and near-full GPUs first."""
    from rich.table import Table

    rows = rr.gpus
    if len(rows) > MAX_GPU_ROWS:
        rows = sorted(rows, key=lambda g: (not g.idle, -(g.mem_peak_pct or 0)))[:MAX_GPU_ROWS]
    t = Table(title=f"per GPU ({len(rows)} of {len(rr.gpus)})" if len(rows) < len(rr.gpus) else "per GPU",
              title_justify="left")
    marked = any(sampling_gaps(g) for g in rows)
    cols = ("node", "GPU", "name", "util% mean/p95", "idle", "mem peak/total GiB", "power mean/limit W",
            "kWh", "temp C") + (("sampling",) if marked else ())
    for col in cols:
        t.add_column(col, justify="left" if col in ("name", "sampling") else "right")
    for g in rows:
        gaps = sampling_gaps(g)
        t.add_row(str(g.node), str(g.index), str(g.name) + (" [red]*[/]" if gaps else ""),
                  f"{fmt_num(g.util_mean_pct, '.0f')}/{fmt_num(g.util_p95_pct, '.0f')}",
                  ("[red]idle[/] " if g.idle else "") + fmt_num(
                      100 * g.idle_fraction if g.idle_fraction is not None else None, ".0f", "%"),
                  _of(g.mem_peak_gb, g.mem_total_gb, "") + (
                      f" ({fmt_num(g.mem_peak_pct, '.0f')}%)" if g.mem_peak_pct is not None else ""),
                  _of(g.power_mean_w, g.power_limit_w, "", ".0f"),
                  fmt_num(g.energy_kwh, ".3f") + ("*" if g.energy_source == "power" else ""),
                  fmt_num(g.temp_max_c, ".0f"), *(([f"[red]{gaps}[/]" if gaps else "ok"]) if marked else []))
    return t


def totals_lines(rr: RunReport) -> list[str]:
    """GPU-hours, energy, cost and throughput as plain lines."""
    t, tp = rr.totals, rr.throughput
    lines = []
    if t.get("cpu_only"):
        lines.append(f"node-hours (CPU job): requested {fmt_num(t['node_hours_requested'], '.2f')} "
                     f"({t['nodes_requested']} node(s) x {fmt_num((t['wall_s'] or 0) / 60, '.1f')} min wall), "
                     f"reserved by the time limit {fmt_num(t['node_hours_reserved'], '.2f')}")
        lines.append(f"cost: {fmt_num(t['cost_total'], '.2f')} = {fmt_num(t['node_hours_requested'], '.2f')} "
                     f"node-hours at {fmt_num(t['price_per_node_hour'], 'g')}/node-hour (no GPU)")
    if t["gpus_requested"]:
        lines.append(f"GPU-hours: requested {fmt_num(t['gpu_hours_requested'], '.2f')} "
                     f"({t['gpus_requested']} GPU(s) x {fmt_num((t['wall_s'] or 0) / 60, '.1f')} min wall), "
                     f"reserved by the time limit {fmt_num(t['gpu_hours_reserved'], '.2f')}, busy "
                     f"{fmt_num(t['gpu_hours_busy'], '.2f')}, utilization-weighted "
                     f"{fmt_num(t['gpu_hours_util'], '.2f')}")
        lost = sum(1 for g in rr.gpus if g.lost)
        lines.append(f"idle GPUs: {t['idle_gpus']} of {t['gpus_sampled']} sampled "
                     f"(below {rr.job.get('idle_util_pct')}% utilization for most of the run)"
                     + (f"; {lost} lost mid-run, counted on what was sampled before" if lost else ""))
    if t["gpus_requested"] or not t.get("cpu_only"):
        idle_cost = fmt_num(t["cost_idle"], ".2f")
        lines.append(f"energy (GPUs): {fmt_num(t['energy_kwh'], '.3f', ' kWh')}   cost: "
                     f"{fmt_num(t['cost_total'], '.2f')} = {fmt_num(t['cost_gpu_hours'], '.2f')} GPU-hours at "
                     f"{fmt_num(t['price_per_gpu_hour'], 'g')}/h + {fmt_num(t['cost_energy'], '.2f')} energy at "
                     f"{fmt_num(t['price_per_kwh'], 'g')}/kWh" + (f"; idle GPU time cost {idle_cost}"
                                                                 if idle_cost not in ("-", "0.00") else ""))
    mfu = (f"MFU {fmt_num(100 * tp['mfu'], '.1f')}% ({fmt_num(tp['achieved_tflops'], '.2f')} of "
           f"{tp['gpus']} x {fmt_num(tp['peak_tflops_per_gpu'], 'g')} TFLOPS, {tp['peak_source']})"
           if tp["mfu"] is not None
           else f"MFU: n/a ({tp['mfu_unavailable']})")
    # A job without tokens (data=synthetic, a vector model) records 0 tokens/s: there is no rate to show.
    lines.append(f"throughput: {fmt_num(tp['samples_per_s'], '.1f')} samples/s, "
                 f"{fmt_num(tp['tokens_per_s'] or None, '.0f')} tokens/s; {mfu}")
    m = rr.memory
    if m.get("estimated_bytes") or m.get("measured_bytes"):
        # in a unit that shows it, as the estimate prints it: 2.5 MB is not "0.00 GiB", 40 KB not "0.0 MiB"
        est = fmt_bytes(m["estimated_bytes"]) if m.get("estimated_bytes") else "- (none saved)"
        meas = (f"{fmt_bytes(m['measured_bytes'])} ({m.get('measured_source')})"
                if m.get("measured_bytes") else "-")
        err = f"; estimate {100 * m['estimate_error']:+.0f}%" if m.get("estimate_error") is not None else ""
        lines.append(f"memory per worker: estimated {est}, measured {meas}{err}")
    if rr.evaluation:
        lines.append(f"training: final loss {fmt_num(tp['final_loss'], '.4f')}; {eval_summary(rr.evaluation)}")
    if tp.get("precision"):
        lines.append(f"precision: {tp['precision']}" + (f" ({tp['precision_reason']})"
                                                        if tp.get("precision_reason") else ""))
    extra = {k: v for k, v in rr.metrics.items() if k not in rr.evaluation}  # a user's script's own metrics
    if extra:
        lines.append(f"metrics: {metrics_text(extra)}")
    return lines


def metrics_text(metrics: dict[str, Any]) -> str:
    """``name value`` pairs of a run's metrics, in the order reported (the sweep table's metrics column)."""
    return ", ".join(f"{k} {fmt_num(v, '.4g')}" for k, v in metrics.items()) or "-"


def render_text(rr: RunReport, command: bool = True):
    """The whole run report as one rich renderable; ``command=False`` leaves out the advised command line, which
    the commands print on its own, unbroken (``hpc_ft.report.print_report``)."""
    from rich.console import Group
    from rich.text import Text

    parts: list[Any] = [Text(f"run report: {rr.job.get('name') or ''}  {rr.run_dir}", style="bold")]
    parts += [Text(n, style="yellow") for n in rr.notes]
    parts.append(node_table(rr))
    if rr.gpus:
        parts.append(gpu_table(rr))
    parts += [Text(line) for line in totals_lines(rr)]
    if any(g.energy_source == "power" for g in rr.gpus):
        parts.append(Text("* energy from sampled power (this GPU has no energy counter)", style="dim"))
    for n in rr.nodes:
        for note in n.notes:  # every one: a lost GPU or dropped metric must not be hidden
            parts.append(Text(f"node {n.node}: {note}", style="dim"))
    if rr.advice:
        parts.append(Text("right-sizing advice for the next submission:", style="bold"))
        for a in rr.advice:
            parts.append(Text(f"  {a.override}   ({a.reason})"))
        if command:
            parts.append(Text(f"  {rr.command}", style="green"))
    else:
        parts.append(Text("right-sizing: the request fits what the job used; no change advised"))
    return Group(*parts)


def sweep_table(jobs: list[tuple[str, RunReport]], short_keys: bool = False, overrides_width: int | None = None):
    """One row per job of a sweep; its overrides column shows what sets the job apart from the others, a value too
    long for the column folded onto the next line (never cut to ``scrip…``). ``short_keys``: each key by the
    shortest tail of its dotted path (``lr=0.1`` for ``optim.lr=0.1``), the full keys in the caption under the
    table; ``overrides_width``: that column's width, kept while the others give way. Both for a terminal too narrow
    for the whole table (``hpc_ft.report.sweep_view.SweepView`` picks them)."""
    from rich.table import Table
    from rich.text import Text

    def shown(rr) -> list[str]:
        return [o for o in rr.job.get("overrides", [])
                if not o.lstrip("+~").startswith(("hydra.", "hydra/", "run.dir"))]

    # What sets the jobs apart: an override every job shares (model=..., data=...) would fill the column.
    common = set.intersection(*(set(shown(rr)) for _, rr in jobs)) if len(jobs) > 1 else set()
    apart = [[o for o in shown(rr) if o not in common] for _, rr in jobs]
    shorts = shortest_keys({split_override(o)[1] for ov in apart for o in ov} - {""}) if short_keys else {}
    legend = key_legend(shorts)
    t = Table(title=f"sweep: {len(jobs)} job(s)", title_justify="left", caption_justify="left",
              caption=Text(legend, style="dim") if legend else None)
    for col in ("job", "overrides", "nodes x GPUs", "status", "wall", "GPU util %", "idle GPUs", "GPU-h",
                "energy", "cost", "samples/s", "final loss", "metrics", "advice"):
        t.add_column(col, justify="left" if col in ("job", "overrides", "status", "metrics", "advice") else "right",
                     overflow="fold" if col == "overrides" else "ellipsis",
                     width=overrides_width if col == "overrides" else None)
    cells = [" ".join(abbreviate(ov, shorts)) or "-" for ov in apart]
    for (name, rr), cell in zip(jobs, cells):
        res = rr.job.get("resources") or {}
        statuses = sorted({n.status for n in rr.nodes}) or ["-"]
        utils = [g.util_mean_pct for g in rr.gpus if g.util_mean_pct is not None]
        t.add_row(name, cell, f"{res.get('nodes', '-')} x {res.get('gpus_per_node', '-')}",
                  ",".join(statuses), fmt_num(rr.totals["wall_s"], ".0f", " s"),
                  fmt_num(sum(utils) / len(utils) if utils else None, ".0f"),
                  f"{rr.totals['idle_gpus']}/{rr.totals['gpus_sampled']}" if rr.gpus else "-",
                  fmt_num(rr.totals["node_hours_requested"], ".2f", " node-h") if rr.totals.get("cpu_only")
                  else fmt_num(rr.totals["gpu_hours_requested"], ".2f"), fmt_num(rr.totals["energy_kwh"], ".3f"),
                  fmt_num(rr.totals["cost_total"], ".2f"), fmt_num(rr.throughput["samples_per_s"], ".1f"),
                  fmt_num(rr.throughput["final_loss"], ".4f"),
                  eval_summary(rr.evaluation) if rr.evaluation else metrics_text(rr.metrics),
                  " ".join(a.override for a in rr.advice) or "-")
    return t
