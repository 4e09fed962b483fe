"""tune_curves.png tells its trials apart (trial 4: every completed trial was drawn in one colour, no legend)."""

from __future__ import annotations

from matplotlib.colors import to_hex

from hpc_ft.rundir.evals import EvalPoint
from hpc_ft.tune.results import CURVE_LEGEND_MAX, SearchResults, TrialRow, curves_figure, write_plots


def _results(n: int, pruned: set[int] = frozenset()) -> SearchResults:
    rows = []
    for i in range(n):
        curve = [EvalPoint(step, {"eval_loss": 1.0 / (step + i + 1)}) for step in (10, 20, 30)]
        if i in pruned:
            curve = curve[:1]
        rows.append(TrialRow(number=i, params={"optim.lr": 1e-3 * (i + 1)}, value=curve[-1].metrics["eval_loss"],
                             state="pruned" if i in pruned else "complete", steps=curve[-1].step, unit_hours=0.01,
                             run_dir=f"/nowhere/{i}", overrides=[], curve=curve))
    done = [r for r in rows if r.state == "complete"]
    return SearchResults(rows=rows, direction="minimize", metric="eval_loss", best=min(done, key=lambda r: r.value),
                         spent_unit_hours=0.01 * n)


def _trial_lines(ax):
    """The trials' curves (not the x marking where a pruned one stopped)."""
    return [ln for ln in ax.get_lines() if ln.get_marker() != "x"]


def test_few_trials_each_get_a_colour_and_a_legend_entry():
    res = _results(6, pruned={2, 4})
    ax = curves_figure(res).axes[0]
    lines = _trial_lines(ax)
    assert len(lines) == 6
    assert len({to_hex(ln.get_color()) for ln in lines}) == 6  # completed trials too: no two share a colour
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["trial 0", "trial 1", "trial 2 (pruned)", "trial 3", "trial 4 (pruned)", "trial 5 (best)"]
    styles = {ln.get_label(): ln.get_linestyle() for ln in lines}
    assert styles["trial 2 (pruned)"] == "--" and styles["trial 3"] == "-"
    stops = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]  # in the colour of the trial they end
    assert [to_hex(ln.get_color()) for ln in stops] == [to_hex(lines[2].get_color()), to_hex(lines[4].get_color())]


def test_many_trials_get_a_colour_bar_and_only_the_best_in_the_legend():
    n = CURVE_LEGEND_MAX + 15
    fig = curves_figure(_results(n))
    ax = fig.axes[0]
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "trial"  # the colour bar, by trial number
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"trial {n - 1} (best)"]
    assert len({to_hex(ln.get_color()) for ln in _trial_lines(ax)}) == n


def test_write_plots_draws_the_curves(tmp_path):
    (tmp_path / "report").mkdir()
    paths = write_plots(tmp_path, _results(3))
    assert [p.name for p in paths][-1] == "tune_curves.png" and paths[-1].stat().st_size > 0
