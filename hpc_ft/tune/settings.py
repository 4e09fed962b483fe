"""The tune.* settings: their rules (checked before anything is submitted), Optuna's sampler and pruner."""

from __future__ import annotations

from typing import Any

from hpc_ft.config.schema import TUNE_DIRECTIONS, TUNE_PRUNERS, TUNE_SAMPLERS, JobConf
from hpc_ft.errors import Problem


def tune_problems(conf: JobConf) -> list[Problem]:
    """Problems of the tune.* settings, each naming key, value, rule and fix."""
    t = conf.tune
    p: list[Problem] = []

    def need(ok: bool, key: str, value: object, rule: str, fix: str) -> None:
        if not ok:
            p.append(Problem(key, value, rule, fix))

    need(t.sampler in TUNE_SAMPLERS, "tune.sampler", t.sampler, f"must be one of {', '.join(TUNE_SAMPLERS)}",
         "pass tune.sampler=tpe")
    need(t.pruner in TUNE_PRUNERS, "tune.pruner", t.pruner, f"must be one of {', '.join(TUNE_PRUNERS)}",
         "pass tune.pruner=asha")
    need(t.direction in TUNE_DIRECTIONS, "tune.direction", t.direction,
         f"must be one of {', '.join(TUNE_DIRECTIONS)}", "pass tune.direction=minimize")
    need(bool(t.metric) and isinstance(t.metric, str), "tune.metric", t.metric,
         "must name an eval metric of the task", "pass tune.metric=eval_loss")
    need(t.trials >= 1, "tune.trials", t.trials, "must be at least 1", "pass tune.trials=16")
    need(t.reduction_factor >= 2, "tune.reduction_factor", t.reduction_factor, "must be at least 2",
         "pass tune.reduction_factor=3")
    need(t.min_steps is None or 1 <= t.min_steps <= conf.train.max_steps, "tune.min_steps", t.min_steps,
         f"must be between 1 and train.max_steps={conf.train.max_steps}", "pass tune.min_steps=100 or leave it unset")
    need(t.parallelism is None or t.parallelism >= 1, "tune.parallelism", t.parallelism, "must be at least 1",
         "pass tune.parallelism=2 or leave it unset")
    need(t.poll_interval_s > 0, "tune.poll_interval_s", t.poll_interval_s, "must be a positive number of seconds",
         "pass tune.poll_interval_s=0.5")
    every = conf.train.eval_every_steps
    need(t.pruner == "none" or 0 < every < conf.train.max_steps, "train.eval_every_steps", every,
         f"tune.pruner={t.pruner} decides at evaluations, so trials must evaluate before train.max_steps="
         f"{conf.train.max_steps}", f"pass train.eval_every_steps={max(1, conf.train.max_steps // 8)} or "
         "tune.pruner=none")
    return p


def metric_problems(conf: JobConf) -> list[Problem]:
    """``tune.metric`` against the metrics the task evaluates (its class's ``METRICS``), before any trial runs: the
    driver would otherwise learn it from the first trial's first evaluation, with that trial's run dir left
    failed. Imports the task class (torch). Not checked: a user's script (its metrics are its own) and a task
    class that declares no ``METRICS``."""
    import difflib
    import pydoc

    from hpc_ft.config.script import uses_script

    task = conf.task
    target = task.get("_target_") if hasattr(task, "get") else None
    if uses_script(conf) or not isinstance(target, str):
        return []
    try:
        names = getattr(pydoc.locate(target), "METRICS", None)
    except Exception:  # noqa: BLE001 - a task that cannot be imported here: the trial's own check reports it
        return []
    metric = conf.tune.metric
    if not names or not isinstance(metric, str) or metric in names:
        return []
    near = difflib.get_close_matches(metric, list(names), n=1, cutoff=0.5)
    return [Problem("tune.metric", metric, f"is not a metric of {target.rsplit('.', 1)[-1]}, which evaluates "
                    f"{', '.join(names)}", f"pass tune.metric={near[0] if near else names[0]}")]


def min_steps(conf: JobConf) -> int:
    """The pruner's first rung in optimizer steps: tune.min_steps, else the first evaluation."""
    return conf.tune.min_steps or conf.train.eval_every_steps or conf.train.max_steps


def make_sampler(conf: JobConf, grid: dict[str, list[Any]]) -> Any:
    """Optuna's sampler for tune.sampler (seeded with tune.seed)."""
    import optuna

    name, seed = conf.tune.sampler, conf.tune.seed
    if name == "grid":
        return optuna.samplers.GridSampler(grid, seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # A budgeted search runs few trials: a third of them (2 to 10, Optuna's default) explore at random first.
    # constant_liar: trials running at once are not proposed the same point.
    startup = max(2, min(10, conf.tune.trials // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(conf: JobConf) -> Any:
    """Optuna's pruner for tune.pruner, deciding at every evaluation (steps are optimizer steps)."""
    import optuna

    name = conf.tune.pruner
    if name == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_steps(conf),
                                                      reduction_factor=conf.tune.reduction_factor)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=min_steps(conf) - 1)
    return optuna.pruners.NopPruner()


def final_metric(reports: list, metric: str) -> float:
    """A finished job's ``metric`` (tune.metric) from its node reports' training result: what Hydra's Optuna
    sweeper gets as the job's return value. Raises ConfigError naming tune.metric when the job has no such metric."""
    from hpc_ft.errors import ConfigError

    train = next((r.train for r in reports if getattr(r, "train", None) is not None), None)
    have = {} if train is None else {k: v for k, v in train.metrics.items() if isinstance(v, (int, float))}
    if metric not in have:
        raise ConfigError([Problem("tune.metric", metric,
                                   f"is not a metric of the job's result (it has {', '.join(sorted(have)) or 'none'})",
                                   f"pass tune.metric={next(iter(sorted(have)), 'eval_loss')}")])
    return float(have[metric])
