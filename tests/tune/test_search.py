"""Real searches on the local executor: trials are hpc_ft jobs (submitit, torchrun) on the seconds-long synthetic task.

The synthetic clusters are made to overlap (2 features, 8 classes), so the eval loss has a floor above zero and
depends on the learning rate.
"""

import json
import signal
import subprocess
from pathlib import Path

import pytest

from hpc_ft.rundir.evals import read_evals
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.lock import RunDirLock
from hpc_ft.rundir.records import NodeReport
from tests.conftest import execute_notebook, wait_until

from .conftest import EXE, TRIAL, study_trials, tune

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"

pytestmark = pytest.mark.slow

# The driver polls every 0.05 s here: a synthetic step is sub-millisecond, and a slow poll lets a pruned trial run
# on past its stop decision (the node-hours comparison with the grid would measure the poll, not the pruning).
HARD = [*TRIAL, "data.num_features=2", "data.num_classes=8", "tune.poll_interval_s=0.05"]
LR_RANGE = (1e-3, 3e-1)


def node_hours(run_dir):
    """A run's node-hours from its own node reports (wall time per node)."""
    rd = RunDir(run_dir)
    return sum(NodeReport.load(rd.node_report(r)).wall_s for r in sorted(rd.node_ranks())) / 3600.0


def final_eval_loss(run_dir):
    return read_evals(RunDir(run_dir).metrics)[-1].metrics["eval_loss"]


def test_pruned_search_nears_the_best_of_a_16_point_grid_at_half_its_node_hours(tmp_path):
    import numpy as np

    grid = [f"{x:.6g}" for x in np.geomspace(*LR_RANGE, 16)]
    g = tune([f"optim.lr=choice({','.join(grid)})", *HARD, "tune.sampler=grid", "tune.pruner=none",
              "tune.trials=16", "tune.parallelism=2", f"hydra.sweep.dir={tmp_path / 'grid'}"], tmp_path, 1200)
    assert g.returncode == 0, g.stdout[-3000:] + g.stderr[-3000:]
    # Six trials, not eight: a seconds-long trial is mostly torchrun's and Python's start, which pruning cannot
    # save, so eight trials cost almost exactly half the grid and the comparison measured the machine's noise (CI
    # saw 0.5007x). The best of six still comes from the same seeded trials.
    s = tune([f"optim.lr=tag(log,interval({LR_RANGE[0]},{LR_RANGE[1]}))", *HARD, "tune.trials=6",
              "tune.parallelism=2", "tune.reduction_factor=2", f"hydra.sweep.dir={tmp_path / 'search'}"],
             tmp_path, 1200)
    assert s.returncode == 0, s.stdout[-3000:] + s.stderr[-3000:]

    grid_runs = [tmp_path / "grid" / str(n) for n in range(16)]
    search_trials = study_trials(tmp_path / "search")
    search_runs = [tmp_path / "search" / str(t.number) for t in search_trials]
    assert sorted(json.loads(json.dumps(NodeReport.load(RunDir(r).node_report(0)).train.steps))
                  for r in grid_runs) == [200] * 16
    best_grid = min(final_eval_loss(r) for r in grid_runs)
    complete = [r for t, r in zip(search_trials, search_runs) if t.state.name == "COMPLETE"]
    best_search = min(final_eval_loss(r) for r in complete)
    assert best_search <= best_grid * 1.02, (best_search, best_grid)
    grid_cost, search_cost = sum(map(node_hours, grid_runs)), sum(map(node_hours, search_runs))
    assert search_cost <= grid_cost / 2, (search_cost, grid_cost)

    # Pruned trials really stopped early, at a checkpoint, and were not requeued or resumed.
    pruned = [r for t, r in zip(search_trials, search_runs) if t.state.name == "PRUNED"]
    assert pruned, s.stdout
    for run in pruned:
        train = NodeReport.load(RunDir(run).node_report(0)).train
        assert train.preempted and train.steps < 200
        assert (RunDir(run).checkpoints / f"step_{train.steps:08d}.pt").exists()
        assert RunDir(run).stop_request.exists()

    # The report: leaderboard with states, the best trial's submit line, plots.
    rep = subprocess.run([EXE, "report", str(tmp_path / "search")], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert "pruned" in rep.stdout and "complete" in rep.stdout and "hpc-ft submit model=mlp" in rep.stdout
    best_line = next(ln.strip() for ln in rep.stdout.splitlines() if ln.strip().startswith("hpc-ft submit"))
    assert "optim.lr=" in best_line and "tune." not in best_line
    assert len(list((tmp_path / "search" / "report").glob("tune_*.png"))) == 3

    # notebooks/search_analysis.ipynb shows the same leaderboard and the three plots.
    text, images = execute_notebook(NOTEBOOKS / "search_analysis.ipynb", tmp_path / "search", "HPC_FT_SWEEP_DIR")
    assert "pruned" in text and "hpc-ft submit model=mlp" in text and images == 3


def test_the_budget_is_never_exceeded_and_ends_the_search(tmp_path):
    budget = 0.03  # node-hours; a trial plans resources.timeout_min=1: 1/60 node-hour
    res = tune(["optim.lr=tag(log,interval(1e-3,1e-1))", *TRIAL, "resources.timeout_min=1",
                "executor.preempt_signal_delay_s=30", "train.max_steps=50", "tune.trials=30",
                "tune.pruner=none", f"sched.budget_gpu_hours={budget}", f"hydra.sweep.dir={tmp_path / 'sw'}"],
               tmp_path, 600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    trials = study_trials(tmp_path / "sw")
    assert 1 <= len(trials) < 30 and "budget spent" in res.stdout
    spent = sum(node_hours(tmp_path / "sw" / str(t.number)) for t in trials)
    assert spent <= budget
    # Every trial started only with its planned size left in the budget: spent before it + 1/60 <= budget.
    done = 0.0
    for t in sorted(trials, key=lambda t: t.datetime_start):
        assert done + 1 / 60 <= budget + 1e-9
        done += node_hours(tmp_path / "sw" / str(t.number))


def test_a_killed_driver_run_again_continues_the_same_study(tmp_path):
    sweep = tmp_path / "sw"
    args = ["optim.lr=tag(log,interval(1e-3,1e-1))", *TRIAL, "train.max_steps=300", "tune.trials=4",
            "tune.parallelism=2", "tune.pruner=none", f"hydra.sweep.dir={sweep}"]
    first = subprocess.Popen([EXE, "tune", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, stdin=subprocess.DEVNULL)
    try:
        # Both first trials are training (an evaluation each), so they are running when the driver dies.
        wait_until(lambda: all(read_evals(RunDir(sweep / str(n)).metrics) for n in (0, 1)), 300,
                   "two trials to evaluate")
        jobs_before = {n: RunDirLock(sweep / str(n)).read_owner().job_id for n in (0, 1)}
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        first.kill()
    assert {t.state.name for t in study_trials(sweep) if t.number in (0, 1)} == {"RUNNING"}

    again = tune(args, tmp_path, 600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "re-attached to job" in again.stdout
    trials = study_trials(sweep)
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]  # the same study: no trial lost, none twice
    assert all(t.state.name == "COMPLETE" for t in trials), [(t.number, t.state, t.user_attrs) for t in trials]
    for n in (0, 1):  # the running trials went on in their own jobs, not submitted again
        assert RunDirLock(sweep / str(n)).read_owner().job_id == jobs_before[n]
        train = NodeReport.load(RunDir(sweep / str(n)).node_report(0)).train
        assert train.start_step == 0 and train.steps == 300
        steps = [p.step for p in read_evals(RunDir(sweep / str(n)).metrics)]
        assert steps == sorted(set(steps))  # each evaluation once: trained once, not retrained
    assert len(list(sweep.glob("[0-9]*"))) == 4


def test_trials_pruned_too_late_to_stop_are_complete_with_their_final_metric(tmp_path):
    """A user's search of 5-second trials: each prune decision came after the trial had trained all its steps,
    and the search labelled such trials pruned at the prune point's value and left them out of the best pick. A
    poll interval longer than a trial makes every decision come that late."""
    sweep = tmp_path / "sw"
    res = tune(["optim.lr=tag(log,interval(1e-4,0.3))", *TRIAL, "train.max_steps=60", "train.eval_every_steps=10",
                "train.ckpt_every_steps=10", "train.log_every_steps=10", "tune.trials=4", "tune.min_steps=10",
                "tune.reduction_factor=2", "tune.poll_interval_s=60", f"hydra.sweep.dir={sweep}"], tmp_path, 600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "finished before the stop took effect" in res.stdout, res.stdout  # the pruner did decide, too late
    assert "stopped at step" not in res.stdout, res.stdout
    trials = study_trials(sweep)
    finals = {}
    for t in trials:
        report = NodeReport.load(RunDir(sweep / str(t.number)).node_report(0))
        train = report.train
        assert train.steps == 60 and not train.preempted
        assert report.exit_code == 0, (t.number, report.exit_code, report.error_tail)  # complete, not failed
        finals[t.number] = final_eval_loss(sweep / str(t.number))
        assert t.state.name == "COMPLETE" and t.value == finals[t.number], (t.number, t.state, t.value)
    # The best of every trial that trained to the end, and each trial's node-hours counted once.
    rep = subprocess.run([EXE, "report", str(sweep)], capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    assert f"best: trial {min(finals, key=finals.get)}," in rep.stdout, rep.stdout
    from hpc_ft.tune.results import load_results

    spent = load_results(sweep).spent_unit_hours
    assert spent == pytest.approx(sum(node_hours(sweep / str(t.number)) for t in trials), rel=1e-6)
