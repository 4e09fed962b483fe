"""`hpc-ft plan -m OVERRIDES`: the sweep's plan as a table (or --json). Submits nothing, imports no torch.

Only the overrides that can change a job's resources or sweep settings (config groups, resources.*, sched.*,
executor.*, telemetry.*, wait, dry_run) are composed, once per distinct combination, so a 1,000-point sweep over
optim.lr composes one config. `hpc-ft submit -m ... dry_run=true` validates every job in full.
"""

from __future__ import annotations

import argparse
import sys

USAGE = "hpc-ft plan [-m] [--json] [--queue-days N | --no-queue] [--lambda-per-h L --mu-per-h M --servers C] OVERRIDES"
EXIT_BAD_CONFIG = 2
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
    """JobConfs of every point (run.dir is a placeholder), composed once per distinct relevant subset."""
    import copy

    from hydra import compose, initialize_config_dir

    from hpc_ft import CONF_DIR
    from hpc_ft.config import register_configs
    from hpc_ft.config.overrides import to_job_conf

    register_configs()
    cache: dict[tuple[str, ...], object] = {}
    confs = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for i, point in enumerate(points):
            key = tuple(o for o in point if plan_relevant(o) and not o.lstrip("+~").startswith(("hydra.", "hydra/")))
            if key not in cache:
                cfg = compose(config_name="config", overrides=[*key, "run.dir=plan"])
                cache[key] = to_job_conf(cfg, list(key))
            conf = copy.deepcopy(cache[key])
            conf.run.dir = f"plan/{i}"
            confs.append(conf)
    return confs


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

    args = _parser().parse_args(argv)
    try:
        plan = make_plan(args)
    except HpcFtError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except Exception as exc:  # Hydra's own: a bad override or a missing config group option
        if type(exc).__module__.startswith(("hydra", "omegaconf")):
            from hpc_ft.config.overrides import refusal_fix
            from hpc_ft.config.renames import renamed_in_config_file
            from hpc_ft.errors import ConfigError

            renamed = renamed_in_config_file(exc)
            if renamed is not None:  # a config file of the user's sets a key by its old name
                print(f"error: {ConfigError([renamed])}", file=sys.stderr)
                return EXIT_BAD_CONFIG
            print(f"error: {exc}", file=sys.stderr)
            print(refusal_fix(["-m", *args.overrides], "hpc-ft plan"), file=sys.stderr)
            return EXIT_BAD_CONFIG
        raise
    print(plan_json(plan) if args.json else plan_table(plan))
    return 0
