"""`hpc-ft tune [-m] OVERRIDES`: search hyperparameters within a budget (Optuna; trials are hpc_ft jobs).

Overrides in Hydra's sweep grammar (``choice``, ``range``, ``tag(log,interval(a,b))``, ``a,b,c``) make the search
space; the others hold for every trial. Everything is checked before the first trial is submitted: the space,
tune.*, sched.* budgets, and the job at each end of every range. The search runs in the foreground (see
``hpc_ft.tune.driver``); run the same command with the same ``hydra.sweep.dir`` to continue it.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from hpc_ft.errors import EXIT_BAD_CONFIG

SWEEP_DIR_KEY = "hydra.sweep.dir="


def _split(argv: list[str]) -> tuple[list[str], str | None]:
    overrides, sweep_dir = [], None
    for a in argv:
        if a in ("-m", "--multirun"):
            continue
        if a.startswith(SWEEP_DIR_KEY):
            sweep_dir = a[len(SWEEP_DIR_KEY):]
            continue
        overrides.append(a)
    return overrides, sweep_dir


def prepare(overrides: list[str]):
    """Parse the space and compose + validate a trial at each end of every range; returns (space, base conf).

    Raises ConfigError with every problem (nothing is written or submitted).
    """
    import copy

    from hpc_ft.config.overrides import to_job_conf
    from hpc_ft.config.renames import renamed_override_problems
    from hpc_ft.errors import ConfigError, Problem
    from hpc_ft.submit.executors import executor_of, validate
    from hpc_ft.tune.budget import TrialSize, TuneBudget, trials_affordable
    from hpc_ft.tune.settings import metric_problems, tune_problems
    from hpc_ft.tune.space import corner_points, parse_space

    renamed = renamed_override_problems(overrides)
    if renamed:
        raise ConfigError(renamed)
    hydra_own = [o for o in overrides if o.lstrip("+~").startswith(("hydra.", "hydra/"))]
    if hydra_own:
        raise ConfigError([Problem(hydra_own[0].split("=", 1)[0], hydra_own[0].split("=", 1)[-1],
                                   "is a Hydra setting hpc-ft tune does not take (only hydra.sweep.dir)",
                                   "drop it, or run Hydra's own sweeper: hpc-ft submit -m hydra/sweeper=optuna ...")])
    space = parse_space(overrides)
    from hydra import compose

    confs = []
    for point in corner_points(space):
        ovs = space.overrides(point)
        cfg = compose(config_name="config", overrides=[*ovs, "run.dir=tune"])
        confs.append(to_job_conf(cfg, ovs))
    problems = []
    for conf in confs:
        try:
            validate(copy.deepcopy(conf))
        except ConfigError as exc:
            problems += [p for p in exc.problems if p not in problems]
    base = confs[0]
    problems += [p for p in tune_problems(base) + metric_problems(base) if p not in problems]
    if base.tune.sampler == "grid":
        problems += space.grid_problems()
    if not executor_of(base).detaches:
        problems.append(Problem("executor.name", base.executor.name, "runs each job in this process, so trials "
                                "cannot run side by side or be stopped early", "pass executor=local or executor=slurm"))
    if executor_of(base).trial_arrays:  # one job array: one request for every trial
        text = {o.split("=", 1)[0].lstrip("+~"): o.split("=", 1)[-1] for o in overrides}
        problems += [Problem(k, text.get(k, "(swept)"), f"executor={base.executor.name} runs a search's trials "
                             "as one job array, which makes one request for all of them",
                             f"fix {k} for the whole search (one value)")
                     for k in space.params if k.split(".")[0] in ("resources", "executor", "run")]
    size, budget = TrialSize.of(base), TuneBudget.of(base)
    if base.sched.budget_gpus is not None and base.sched.budget_gpus < size.units:
        problems.append(Problem("sched.budget_gpus", base.sched.budget_gpus,
                                f"is below one trial's {size.units} {budget.unit}(s)",
                                f"pass sched.budget_gpus={size.units}"))
    if trials_affordable(budget, size) == 0:
        key = "sched.budget_gpu_hours" if base.sched.budget_gpu_hours is not None else "sched.budget_money"
        problems.append(Problem(key, getattr(base.sched, key.split(".")[1]),
                                f"does not pay for one trial at its planned size ({size.units} {budget.unit}(s) x "
                                f"{size.planned_h:.3g} h: sched.est_duration_h, else resources.timeout_min)",
                                f"pass sched.budget_gpu_hours={size.unit_hours:.3g} or a smaller "
                                "resources.timeout_min / sched.est_duration_h"))
    if problems:
        raise ConfigError(problems)
    return space, base


def compose_trial(overrides: list[str], run_dir: Path):
    """One trial's validated JobSpec in ``run_dir`` (inside the command's Hydra context)."""
    from hydra import compose

    from hpc_ft.config.overrides import to_job_conf
    from hpc_ft.submit.executors import resolve, validate

    cfg = compose(config_name="config", overrides=[*overrides, f"run.dir={run_dir}"])
    conf = to_job_conf(cfg, overrides)
    validate(conf)
    return resolve(conf, overrides)


def default_sweep_dir() -> str:
    from hpc_ft.config.fresh_dir import fresh_dir

    return fresh_dir(time.strftime("multirun/%Y-%m-%d/%H-%M-%S"))


def tune_main(argv: list[str]) -> int:
    """Run the search ``argv`` describes; 0 when it ends, 2 on bad input (nothing submitted then)."""
    from hpc_ft.config import register_configs
    from hpc_ft.config.compose import hpc_ft_config_dir
    from hpc_ft.errors import HpcFtError

    overrides, sweep_dir = _split(argv)
    register_configs()
    try:
        with hpc_ft_config_dir():
            try:
                space, base = prepare(overrides)
            except HpcFtError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return EXIT_BAD_CONFIG
            return _search(space, base, overrides, Path(sweep_dir or default_sweep_dir()).absolute())
    except Exception as exc:  # Hydra's own: a bad override or a missing config group option
        if not type(exc).__module__.startswith(("hydra", "omegaconf")):
            raise
        from hpc_ft.config.overrides import refusal_fix

        print(f"error: {exc}", file=sys.stderr)
        print(refusal_fix(overrides, "hpc-ft tune"), file=sys.stderr)
        return EXIT_BAD_CONFIG


def _search(space, base, overrides: list[str], sweep_dir: Path) -> int:
    from hpc_ft.errors import HpcFtError
    from hpc_ft.tune.driver import Driver
    from hpc_ft.tune.results import load_results, render_text, write_plots

    sweep_dir.mkdir(parents=True, exist_ok=True)
    again = shlex.join(["hpc-ft", "tune", *overrides, f"{SWEEP_DIR_KEY}{sweep_dir}"])
    print(f"search in {sweep_dir} (to continue it after a stop: {again})", flush=True)
    driver = Driver(sweep_dir, base, space, compose_trial, say=lambda line: print(line, flush=True))
    print(f"{driver.total} trial(s), {driver.parallelism} at once, sampler {base.tune.sampler}, "
          f"pruner {base.tune.pruner}; budget: "
          + (f"{driver.budget.unit_hours:g} {driver.budget.unit}-hours" if driver.budget.unit_hours else "none"),
          flush=True)
    from hpc_ft.terminal import interrupted_exit_status, stop_signals_as_interrupt

    try:
        with stop_signals_as_interrupt():  # kill or a closed terminal cancels the unreleased array tasks, as Ctrl-C
            driver.run()
    except HpcFtError as exc:
        driver.stop_all()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except KeyboardInterrupt as exc:
        print(f"\nstopped; running trials go on. Continue with: {again}", file=sys.stderr)
        return interrupted_exit_status(exc)
    res = load_results(sweep_dir, base.tune.metric)
    print(render_text(res))
    write_plots(sweep_dir, res)
    print(f"later: hpc-ft report {shlex.quote(str(sweep_dir))}")
    return 0


def report_main(sweep_dir: str) -> int:
    """`hpc-ft report SWEEP_DIR` for a search: the leaderboard, the best trial's submit line, the plots."""
    from hpc_ft.rundir.layout import SweepDir
    from hpc_ft.tune.results import load_results, render_text, write_plots

    res = load_results(sweep_dir)
    print(render_text(res))
    paths = write_plots(sweep_dir, res)
    print(f"wrote {len(paths)} plot(s) in {SweepDir(sweep_dir).report_dir}")
    return 0
