"""A search's results: the leaderboard, the best trial as a ready `hpc-ft submit` line, budget spent, plots.

Read from the study's journal (``SWEEP_DIR/tune.journal``) and each trial's run dir (its evaluations in
``metrics.jsonl``); works while the search runs too.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_ft.rundir.atomic import atomic_write
from hpc_ft.rundir.evals import EvalPoint, read_evals
from hpc_ft.rundir.layout import RunDir, SweepDir
from hpc_ft.tune.driver import (BUDGET, BUDGET_UNIT, ERROR, OVERRIDES, RUN_DIR, STEPS, STOPPED_AT, STUDY_NAME,
                                UNIT_HOURS, journal_storage)

STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}


@dataclass
class TrialRow:
    """One trial of the leaderboard (``value``: its final metric, or the last one before it was stopped)."""

    number: int
    params: dict[str, Any]
    value: float | None
    state: str  # complete | pruned | failed | running
    steps: int | None
    unit_hours: float | None
    run_dir: str
    overrides: list[str]
    error: str = ""
    curve: list[EvalPoint] = field(default_factory=list)


@dataclass
class SearchResults:
    """Every trial, the best complete one, the direction and the metric."""

    rows: list[TrialRow]
    direction: str  # minimize | maximize
    metric: str
    best: TrialRow | None
    spent_unit_hours: float
    budget_unit_hours: float | None = None  # sched.* as unit-hours (None: no limit)
    unit: str = "GPU"  # GPU, or node for CPU-only trials


def is_search(sweep_dir: str | Path) -> bool:
    """Whether ``sweep_dir`` holds a search (`hpc-ft tune`'s journal)."""
    return SweepDir(sweep_dir).tune_journal.exists()


def load_results(sweep_dir: str | Path, metric: str | None = None) -> SearchResults:
    """The search in ``sweep_dir`` as rows (trial order). ``metric`` names the curves' metric (default: the one
    recorded in the trials' job.yaml)."""
    import optuna

    sd = SweepDir(sweep_dir)
    study = optuna.load_study(study_name=STUDY_NAME, storage=journal_storage(sd.tune_journal))
    rows = []
    for t in study.get_trials(deepcopy=False):
        run_dir = t.user_attrs.get(RUN_DIR, str(sd.path / str(t.number)))
        value = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        rows.append(TrialRow(number=t.number, params=dict(t.params), value=value,
                             state=STATES.get(t.state.name, t.state.name.lower()), steps=t.user_attrs.get(STEPS),
                             unit_hours=t.user_attrs.get(UNIT_HOURS), run_dir=run_dir,
                             overrides=list(t.user_attrs.get(OVERRIDES, [])), error=t.user_attrs.get(ERROR, ""),
                             curve=[]))
        if t.state.name == "PRUNED" and rows[-1].steps is None:
            rows[-1].steps = t.user_attrs.get(STOPPED_AT)
    metric = metric or _metric_of(rows)
    for r in rows:
        r.curve = [p for p in read_evals(RunDir(r.run_dir).metrics) if metric in p.metrics]
    direction = "maximize" if study.direction.name == "MAXIMIZE" else "minimize"
    done = [r for r in rows if r.state == "complete" and r.value is not None]
    best = (max if direction == "maximize" else min)(done, key=lambda r: r.value) if done else None
    spent = sum(r.unit_hours or 0.0 for r in rows)
    return SearchResults(rows=rows, direction=direction, metric=metric, best=best, spent_unit_hours=spent,
                         budget_unit_hours=study.user_attrs.get(BUDGET),
                         unit=study.user_attrs.get(BUDGET_UNIT, "GPU"))


def _metric_of(rows: list[TrialRow]) -> str:
    import yaml

    for r in rows:
        try:
            return yaml.safe_load(RunDir(r.run_dir).spec.read_text())["conf"]["tune"]["metric"]
        except (OSError, KeyError, TypeError, yaml.YAMLError):
            continue
    return "eval_loss"


def submit_line(row: TrialRow) -> str:
    """The trial's job as a shell-quoted `hpc-ft submit` command (its overrides; no run dir: a new one)."""
    keep = [o for o in row.overrides if not o.split("=", 1)[0].lstrip("+~").startswith(("tune.", "hydra."))]
    return shlex.join(["hpc-ft", "submit", *keep])


def render_text(res: SearchResults) -> str:
    """The leaderboard (best first, then pruned, running and failed trials), spent unit-hours, the best line."""
    sign = -1 if res.direction == "maximize" else 1
    order = {"complete": 0, "pruned": 1, "running": 2, "waiting": 2, "failed": 3}

    def key(r: TrialRow) -> tuple:
        v = r.value if r.value is not None and math.isfinite(r.value) else math.inf * sign
        return (order.get(r.state, 4), sign * v, r.number)

    keys = list(dict.fromkeys(k for r in res.rows for k in r.params))
    head = ["trial", *keys, res.metric, "steps", f"{res.unit}-hours", "state"]
    body = [[str(r.number), *(_fmt(r.params.get(k)) for k in keys), _fmt(r.value),
             "" if r.steps is None else str(r.steps), "" if r.unit_hours is None else f"{r.unit_hours:.4f}",
             r.state + (f" ({r.error})" if r.error else "")] for r in sorted(res.rows, key=key)]
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    lines = [f"search: {len(res.rows)} trial(s), {res.direction} {res.metric}; "
             f"{sum(r.state == 'pruned' for r in res.rows)} pruned, "
             f"{res.spent_unit_hours:.4f} {res.unit}-hours spent"
             + (f" of a {res.budget_unit_hours:g} {res.unit}-hour budget" if res.budget_unit_hours else ""),
             "  ".join(h.ljust(w) for h, w in zip(head, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    if res.best is not None:
        lines += ["", f"best: trial {res.best.number}, {res.metric} {_fmt(res.best.value)}",
                  f"  {submit_line(res.best)}"]
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_plots(sweep_dir: str | Path, res: SearchResults) -> list[Path]:
    """PNGs under SWEEP_DIR/report/: the metric over trials, against each parameter, and every trial's curve
    over steps (pruned ones dashed, with an x where they stopped). Returns the paths written."""
    from hpc_ft.report.plots import quiet_matplotlib

    quiet_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sd = SweepDir(sweep_dir)
    colors = {"complete": "tab:blue", "pruned": "tab:orange", "failed": "tab:red", "running": "tab:gray"}
    rows = [r for r in res.rows if r.value is not None]
    out = []

    def save(fig: Any, i: int) -> None:
        FigureCanvasAgg(fig)
        atomic_write(sd.tune_plot(i), lambda f: fig.savefig(f, dpi=100, format="png"))
        out.append(sd.tune_plot(i))

    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.add_subplot()
    for state, color in colors.items():
        pts = [(r.number, r.value) for r in rows if r.state == state]
        if pts:
            ax.scatter(*zip(*pts), color=color, label=state)
    ax.set_xlabel("trial")
    ax.set_ylabel(res.metric)
    ax.legend()
    save(fig, 0)

    keys = list(dict.fromkeys(k for r in res.rows for k in r.params))
    fig = Figure(figsize=(5 * max(1, len(keys)), 4), layout="constrained")
    for j, k in enumerate(keys):
        ax = fig.add_subplot(1, max(1, len(keys)), j + 1)
        for state, color in colors.items():
            pts = [(r.params[k], r.value) for r in rows if r.state == state and k in r.params]
            if pts and all(isinstance(x, (int, float)) for x, _ in pts):
                ax.scatter(*zip(*pts), color=color, label=state)
            elif pts:
                ax.scatter([str(x) for x, _ in pts], [y for _, y in pts], color=color, label=state)
        if any(isinstance(r.params.get(k), float) and r.params[k] > 0 for r in rows):
            vals = [r.params[k] for r in rows if isinstance(r.params.get(k), (int, float))]
            if vals and min(vals) > 0 and max(vals) / min(vals) > 20:
                ax.set_xscale("log")
        ax.set_xlabel(k)
        ax.set_ylabel(res.metric)
        ax.legend()
    save(fig, 1)

    save(curves_figure(res), 2)
    return out


CURVE_LEGEND_MAX = 10  # trials named one by one in tune_curves.png's legend (tab10's distinct colours)


def curves_figure(res: SearchResults):
    """Every trial's evaluations over steps, one colour per trial (pruned: dashed, x where stopped). Up to
    CURVE_LEGEND_MAX trials each get a distinct colour and a legend entry "trial N"; more get a colour by trial
    number from a continuous colormap with a colour bar, and only the best trial is named in the legend (it is
    also drawn thicker)."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), layout="constrained")
    ax = fig.add_subplot()
    drawn = [r for r in res.rows if r.curve]
    few = len(drawn) <= CURVE_LEGEND_MAX
    numbers = [r.number for r in drawn] or [0]
    norm = Normalize(min(numbers), max(max(numbers), min(numbers) + 1))
    cmap = colormaps["tab10" if few else "viridis"]
    best = res.best.number if res.best is not None else None
    for i, r in enumerate(drawn):
        xs, ys = [p.step for p in r.curve], [p.metrics[res.metric] for p in r.curve]
        pruned, is_best = r.state == "pruned", r.number == best
        color = cmap(i % 10) if few else cmap(norm(r.number))
        label = None  # many trials: the colour bar tells them apart, the legend names the best
        if few or is_best:
            label = f"trial {r.number}" + (" (best)" if is_best else "" if r.state == "complete" else f" ({r.state})")
        ax.plot(xs, ys, color=color, linestyle="--" if pruned else "-", lw=2.2 if is_best else 1.2,
                alpha=0.9, label=label, zorder=3 if is_best else 2)
        if pruned:
            ax.plot(xs[-1], ys[-1], marker="x", linestyle="none", color=color, zorder=3)
    if not few:
        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="trial")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, loc="best", ncol=2 if len(drawn) > 5 and few else 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(res.metric)
    ax.set_title("every trial's evaluations (pruned: dashed, x where stopped)")
    return fig
