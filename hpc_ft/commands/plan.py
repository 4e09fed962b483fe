"""`hpc-ft plan -m OVERRIDES`: the sweep's plan as a table (or --json). Submits nothing, imports no torch.

Only the overrides that can change a job's resources or sweep settings (config groups, resources.*, sched.*,
executor.*, telemetry.*, wait, dry_run) are composed, once per distinct combination, so a 1,000-point sweep over
optim.lr composes one config; each point's other overrides are applied to a copy of it, and every job is
validated with all its values (a bad value anywhere in the sweep is refused, exit 2).
"""

from __future__ import annotations

import argparse
import sys

from hpc_ft.errors import EXIT_BAD_CONFIG

USAGE = "hpc-ft plan [-m] [--json] [--queue-days N | --no-queue] [--lambda-per-h L --mu-per-h M --servers C] OVERRIDES"
PLAN_KEYS = ("resources.", "sched.", "executor.", "telemetry.")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hpc-ft plan", usage=USAGE, description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--multirun", action="store_true", help="accepted for symmetry with submit -m")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.add_argument("--no-queue", action="store_true", help="no queue-wait estimate (no sacct call)")
    p.add_argument("--queue-days", type=int, default=7, help="sacct history window for the wait estimate")
    p.add_argument("--lambda-per-h", type=float, help="given arrival rate (jobs/h) for the M/M/c wait estimate")
    p.add_argument("--mu-per-h", type=float, help="given service rate (jobs/h per server)")
    p.add_argument("--servers", type=int, help="M/M/c servers c")
    p.add_argument("--no-memory", action="store_true",
                   help="skip the memory estimate of GPU jobs (a child process traces one step per distinct job)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, sweeps as a,b,c")
    return p


def sweep_points(overrides: list[str]) -> list[list[str]]:
    """Hydra's basic-sweeper expansion of ``overrides`` (a,b x c,d -> 4 points), in Hydra's job order."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [list(point) for batch in BasicSweeper.split_arguments(parsed, None) for point in batch]


def plan_relevant(override: str) -> bool:
    """Can this override change resources or sweep settings? (config group choices are assumed to.)"""
    key = override.split("=", 1)[0].lstrip("+~")
    return "." not in key or key.startswith(PLAN_KEYS)


def compose_points(points: list[list[str]]):
    """JobConfs of every point (run.dir is a placeholder), composed once per distinct relevant subset.

    The other overrides of a point (optim.lr, train.*, ...) are then applied to a copy of that composition with
    Hydra's own override rules, so each job is validated with every value it was given (a bad train.max_steps is
    refused here as ``submit`` refuses it) at the cost of a copy, not a compose, per point.
    """
    import copy

    from hydra import compose
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hpc_ft.config import register_configs
    from hpc_ft.config.compose import hpc_ft_config_dir
    from hpc_ft.config.overrides import to_job_conf

    register_configs()
    parser = OverridesParser.create()
    cache: dict[tuple[str, ...], object] = {}
    confs = []
    with hpc_ft_config_dir():
        for i, point in enumerate(points):
            job = [o for o in point if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
            key = tuple(o for o in job if plan_relevant(o))
            if key not in cache:
                cache[key] = compose(config_name="config", overrides=[*key, "run.dir=plan"])
            cfg = copy.deepcopy(cache[key])
            rest = [o for o in job if not plan_relevant(o)]
            if rest:
                ConfigLoaderImpl._apply_overrides_to_config(parser.parse_overrides(rest), cfg)
            conf = to_job_conf(cfg, job)
            conf.run.dir = f"plan/{i}"
            confs.append(conf)
    return confs


# Overrides that can change a job's peak memory per worker: a sweep over optim.lr has one figure for all its jobs.
MEMORY_KEYS = ("task", "model", "data", "precision", "peft", "optim", "train.global_batch_size",
               "train.grad_accum_steps", "train.activation_checkpointing", "train.strategy", "resources")


def _memory_relevant(key: str) -> bool:
    """A config group choice of MEMORY_KEYS or a key under one (the optimizer's class matters, its values not)."""
    return key in MEMORY_KEYS or any(key.startswith(k + ".") for k in MEMORY_KEYS if k != "optim")


def memory_lines(points: list[list[str]]) -> list[str]:
    """The memory estimate (hpc_ft.estimate, in a child process) of every distinct GPU job of the sweep, one line
    each: ``jobs 0-3: peak 12.40 GiB per worker, fits ...``; none for CPU jobs. Raises ConfigError when a job's
    model cannot be built."""
    from hydra import compose

    from hpc_ft.config.compose import hpc_ft_config_dir
    from hpc_ft.config.overrides import to_job_conf
    from hpc_ft.estimate.child import EstimateFailed, estimate_in_child
    from hpc_ft.estimate.model import fmt_bytes
    from hpc_ft.submit.executors import resolve

    groups: dict[tuple[str, ...], list[int]] = {}
    for i, point in enumerate(points):
        key = tuple(o for o in point if _memory_relevant(o.split("=", 1)[0].lstrip("+~")))
        groups.setdefault(key, []).append(i)
    lines = []
    with hpc_ft_config_dir():
        for key, jobs in groups.items():
            point = [o for o in points[jobs[0]] if not o.lstrip("+~").startswith(("hydra.", "hydra/"))]
            spec = resolve(to_job_conf(compose(config_name="config", overrides=[*point, "run.dir=plan"]), point))
            if not spec.conf.resources.gpus_per_node:
                continue
            which = f"job {jobs[0]}" if len(jobs) == 1 else f"jobs {','.join(map(str, jobs))}"
            try:
                fit = estimate_in_child(spec)
            except EstimateFailed as exc:
                lines.append(f"memory, {which}: no estimate ({str(exc)[-200:]})")
                continue
            verdict = ("" if fit.fits is None else ", fits one GPU" if fit.fits else
                       f", does NOT fit one GPU ({fmt_bytes(fit.usable or 0)} usable); fits with: " +
                       (" | ".join(" ".join(f) for f in fit.fixes) or "no single change found"))
            lines.append(f"memory, {which}: peak {fmt_bytes(fit.estimate.peak)} per worker{verdict}")
    return lines


def make_plan(args: argparse.Namespace):
    """Expand, compose, validate and plan; raises HpcFtError (bad input, infeasible budget)."""
    import dataclasses

    from hpc_ft.config.renames import renamed_override_problems
    from hpc_ft.errors import ConfigError
    from hpc_ft.sched import mmc
    from hpc_ft.submit.executors import executor_of, validate
    from hpc_ft.sweep.history import load_history, sacct_queue_estimate
    from hpc_ft.sweep.plan import plan_confs, prefixed_problems, varying

    renamed = renamed_override_problems(args.overrides)
    if renamed:  # a train.* key would not even be composed here: refuse it as submit does
        raise ConfigError(renamed)
    points = sweep_points(args.overrides)
    confs = compose_points(points)
    errors = {}
    for i, conf in enumerate(confs):
        try:
            validate(conf)
        except ConfigError as exc:
            errors[i] = exc
    if errors:
        raise prefixed_problems(errors, len(confs))
    shown = [[o for o in p if not o.lstrip("+~").startswith(("hydra.", "hydra/"))] for p in points]
    plan = plan_confs(confs, varying(shown), load_history(list(confs[0].sched.history)))
    wait, note = None, ""
    if args.lambda_per_h is not None or args.mu_per_h is not None:
        wait = mmc(args.lambda_per_h or 0.0, args.mu_per_h or 0.0, args.servers or 1,
                   ["rates given on the command line"])
    elif not args.no_queue and executor_of(confs[0]).queue_estimate:
        wait, note = sacct_queue_estimate(args.queue_days, args.servers)
    if wait is not None or note:
        plan = dataclasses.replace(plan, wait=wait, assumptions=plan.assumptions + ([note] if note else []))
    return plan


def plan_main(argv: list[str]) -> int:
    """Print the plan of the sweep ``argv`` describes; 0 on success, 2 on bad input or an infeasible budget."""
    from hpc_ft.errors import HpcFtError
    from hpc_ft.sched import plan_json, plan_table

    # Options anywhere among the overrides (`-m a=1,2 --no-queue b=c`), as hpc-ft submit and tune take them.
    args = _parser().parse_intermixed_args(argv)
    try:
        plan = make_plan(args)
    except HpcFtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except Exception as exc:  # Hydra's own: a bad override or a missing config group option
        if type(exc).__module__.startswith(("hydra", "omegaconf")):
            from hpc_ft.config.overrides import hydra_refusal, refusal_fix
            from hpc_ft.config.renames import renamed_in_config_file
            from hpc_ft.errors import ConfigError

            renamed = renamed_in_config_file(exc)
            if renamed is not None:  # a config file of the user's sets a key by its old name
                print(f"error: {ConfigError([renamed])}", file=sys.stderr)
                return EXIT_BAD_CONFIG
            cause = f"\n{exc.__cause__}" if exc.__cause__ is not None else ""  # as Hydra's own CLI prints it
            print(hydra_refusal(f"{exc}{cause}"), file=sys.stderr)
            # the command as typed, its options kept where they were: the fix is pasted back whole
            print(refusal_fix(list(argv), "hpc-ft plan"), file=sys.stderr)
            return EXIT_BAD_CONFIG
        raise
    memory: list[str] = []
    if not args.no_memory:
        try:
            memory = memory_lines(sweep_points(args.overrides))
        except HpcFtError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_CONFIG
    if args.json and memory:
        import json

        print(json.dumps({**json.loads(plan_json(plan)), "memory": memory}, indent=1, allow_nan=False))
    elif args.json:
        print(plan_json(plan))
    else:
        print(plan_table(plan))
        for line in memory:
            print(line)
    return 0
