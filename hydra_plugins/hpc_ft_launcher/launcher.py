"""HpcFtLauncher: every job of a -m sweep composed, validated and planned before any is submitted.

For hpc_ft's own jobs (a config with JobConf's keys); any other Hydra app goes to hydra_plugins.hpc_ft_launcher.app.

1. compose every job (Hydra's sweep config), validate all of them, plan the sweep (hpc_ft.sched: GPUs per
   job, order, parallelism; an infeasible budget is refused naming the smallest one that fits);
2. Hydra's per-job setup (output dir hydra.sweep.dir/hydra.sweep.subdir, .hydra/ with the overrides) runs
   the task function, which hands its job to the sweep (hpc_ft.sweep.context) instead of submitting it;
3. submit in plan order (Slurm: one array per resource group, %parallelism; local: a queue of that width),
   wait, print the jobs' results and write the sweep report (when telemetry ran), and return one JobReturn per
   job whose return_value is every node's NodeReport; under Hydra's Optuna sweeper (``hydra/sweeper=optuna``) it
   is the job's ``tune.metric`` instead, the number that sweeper optimises.

A sweeper may call the launcher once per batch of jobs (Optuna: ``hydra.sweeper.n_jobs`` trials at a time), numbering
the jobs on across batches: a batch that does not start at job 0 continues the sweep in its sweep dir (its jobs are
added to manifest.json, its plan to plan.txt; hpc_ft.sweep.run).

A task that does not hand its job over (hpc-ft sbatch, a dry run) gets Hydra's usual behaviour: run once per job.
"""

# No `from __future__ import annotations`: Hydra's plugin scan runs this module outside sys.modules,
# where dataclasses cannot resolve string annotations.
import atexit
import copy
import logging
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hpc_ft.errors import LaunchError

log = logging.getLogger(__name__)


@dataclass
class HpcFtLauncherConf:
    """hpc_ft's own jobs take everything from the job config (executor.*, sched.*, wait) and ignore the fields
    below; a Hydra app of one's own takes its request from them (hydra_plugins.hpc_ft_launcher.app)."""

    _target_: str = "hydra_plugins.hpc_ft_launcher.launcher.HpcFtLauncher"
    executor: str = "local"  # local | debug | slurm
    nodes: int = 1  # nodes per job; the task function runs once per node
    gpus_per_node: int = 0
    gpu_type: Optional[str] = None  # Slurm GRES type, e.g. a100 (None: any)
    cpus_per_task: int = 2
    mem_gb: float = 8.0  # memory per node
    timeout_min: int = 60  # wall-clock limit of each job
    partition: Optional[str] = None  # Slurm partition (None: the cluster default)
    account: Optional[str] = None
    qos: Optional[str] = None
    constraint: Optional[str] = None  # Slurm node features
    preempt_signal: str = "USR2"  # sent before the time limit; submitit then requeues the job
    preempt_signal_delay_s: int = 120
    max_requeues: int = 3  # requeues after preemption or time-out
    setup: List[str] = field(default_factory=list)  # shell lines before the job, e.g. "module load cuda"
    env: Dict[str, str] = field(default_factory=dict)  # environment variables exported to every node
    extra_sbatch: Dict[str, Any] = field(default_factory=dict)  # other sbatch options, e.g. {mail-type: END}
    array_parallelism: Optional[int] = None  # jobs at once (None: from the plan and its budget)
    budget_gpus: Optional[int] = None  # GPUs in use at once for the whole sweep (CPU jobs count a node each)
    budget_gpu_hours: Optional[float] = None  # GPU-hours for the whole sweep
    est_duration_h: Optional[float] = None  # each job's wall hours, for the plan (None: 1 h assumed)
    telemetry: bool = True  # sample GPUs and the host beside the task function on every node
    telemetry_interval_s: float = 1.0
    preflight: bool = True  # Slurm: check the request against the cluster's partitions first


ConfigStore.instance().store(group="hydra/launcher", name="hpc_ft", node=HpcFtLauncherConf, provider="hpc_ft")


class HpcFtLauncher(Launcher):
    def __init__(self, **params: Any) -> None:
        super().__init__()
        self.params = params  # the launcher's own fields: a Hydra app's request (hpc_ft's jobs ignore them)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None
        # A Hydra app's sweep dir, and the part of its path missing at setup (what this sweep makes of it).
        self.sweep_dir: Optional[Path] = None
        self.made_from: Optional[Path] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function
        if _optuna_sweeper(config):
            quiet_optuna_sweeper_deprecations()  # the distributions it builds in sweep(), for any Hydra app
        from hydra_plugins.hpc_ft_launcher.app import is_hpc_ft_config

        if not is_hpc_ft_config(config):  # (hpc-ft itself removes what a refused command of its own made)
            self.sweep_dir, self.made_from = _sweep_dir_at_setup(config)
            if self.made_from is not None:
                # Hydra's sweeper makes the sweep dir, then checks every job's overrides (a key the app lacks:
                # exit 1) before the first launch: a process that ends in between leaves nothing this sweep made.
                atexit.register(self._discard_unlaunched)

    def _discard_unlaunched(self) -> None:
        from hydra_plugins.hpc_ft_launcher.leftovers import discard

        if self.sweep_dir is not None:
            discard(self.sweep_dir, self.made_from)

    # -- Hydra's entry point --------------------------------------------------------------------------------
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hpc_ft.errors import HpcFtError
        from hpc_ft.sweep.context import SweepContext, preparing

        atexit.unregister(self._discard_unlaunched)  # launched: what remains is the launch's to keep or remove
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        from hydra_plugins.hpc_ft_launcher.app import is_hpc_ft_config, launch_app

        if not is_hpc_ft_config(self.config):  # a Hydra app of the user's own: its task function is the payload
            params = {k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
                      for k, v in self.params.items()}
            return launch_app(params, self.config, self.hydra_context, self.task_function, job_overrides,
                              initial_job_idx, unknown=unknown_key_problems(params), made_from=self.made_from)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        nums = [initial_job_idx + i for i in range(len(job_overrides))]
        overrides = {n: list(o) for n, o in zip(nums, job_overrides)}
        configs = {n: self._sweep_config(overrides[n], n) for n in nums}

        ctx = SweepContext()
        plan = None
        try:
            plan = self._plan(configs, overrides)
        except HpcFtError as exc:  # delivered through the first task, so the CLI reports it as a bad config
            ctx.error = exc
        # Hydra numbers a sweep's jobs from 0 on across the batches its sweeper launches: a batch from above 0 adds
        # to this sweep dir's sweep (its plan lines go to plan.txt only, not again to the terminal per batch).
        continues = initial_job_idx > 0
        # A sweep refused by its plan prepares nothing: its first job only carries the error to the CLI.
        announce = log.info if ctx.error is None else log.debug
        announce(f"hpc_ft: preparing {len(nums)} more sweep job(s) in {sweep_dir} (their plan: plan.txt)" if continues
                 else f"hpc_ft: preparing {len(nums)} sweep job(s) in {sweep_dir}")
        runs: dict[int, JobReturn] = {}
        with preparing(ctx):
            for n in nums:
                announce(f"\t#{n} : {' '.join(filter_overrides(overrides[n]))}")
                runs[n] = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                  config=configs[n], job_dir_key="hydra.sweep.dir",
                                  job_subdir_key="hydra.sweep.subdir")
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
                if ctx.refused:
                    break
        if plan is None or ctx.refused or set(ctx.specs) != set(nums):
            return [runs[n] for n in nums if n in runs]  # refused, or a task that runs each job itself
        for line in sorted({w for ws in ctx.warnings.values() for w in ws}):
            log.warning(line)
        return self._submit(plan, ctx.specs, runs, sweep_dir, continues)

    # -- 1. compose, validate, plan -------------------------------------------------------------------------
    def _sweep_config(self, overrides: list[str], num: int) -> DictConfig:
        assert self.hydra_context is not None and self.config is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id = num
            cfg.hydra.job.num = num
        return cfg

    @staticmethod
    def _job_conf(sweep_config: DictConfig) -> Any:
        """The typed JobConf of a sweep job, its ${hydra:...} values resolved as run_job will resolve them."""
        cfg = copy.deepcopy(sweep_config)
        out = str(OmegaConf.select(cfg, "hydra.sweep.dir"))
        out = os.path.abspath(os.path.join(out, str(OmegaConf.select(cfg, "hydra.sweep.subdir"))))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = out
        hc = HydraConfig.instance()
        before = hc.cfg
        hc.set_config(cfg)
        try:
            from hpc_ft.config.overrides import to_job_conf

            overrides = OmegaConf.to_container(cfg.hydra.overrides.task, resolve=False)  # as typed
            with read_write(cfg), open_dict(cfg):
                del cfg["hydra"]
            # Refuses keys added with '+' that hpc_ft lacks, deleted settings and unresolvable interpolations.
            return to_job_conf(cfg, overrides)
        finally:
            hc.cfg = before

    def _plan(self, configs: dict[int, DictConfig], overrides: dict[int, list[str]]):
        """Validate every job, plan the sweep, give each job its allocated GPUs; raises ConfigError."""
        from hpc_ft.errors import ConfigError, Problem
        from hpc_ft.submit.executors import executor_named, resolve, validate
        from hpc_ft.sweep.history import load_history
        from hpc_ft.sweep.plan import allocation_overrides, plan_confs, prefixed_problems, varying

        nums = sorted(configs)
        confs = {n: self._job_conf(configs[n]) for n in nums}

        def check(which: list[int]) -> None:
            from hpc_ft.train.precheck import check_before_dispatch

            errors = {}
            for n in which:
                try:
                    validate(confs[n])
                    check_before_dispatch(resolve(copy.deepcopy(confs[n])))  # dataset sizes; a resumed job dir
                except ConfigError as exc:
                    errors[n] = exc
            if errors:
                raise prefixed_problems(errors, len(nums))

        check(nums)
        dirs = [confs[n].run.dir for n in nums]
        if len(set(dirs)) < len(dirs):
            raise ConfigError([Problem("run.dir", dirs[0], "is the same for several sweep jobs",
                                       "leave run.dir unset: each job gets hydra.sweep.dir/hydra.sweep.subdir")])
        history = load_history(list(confs[nums[0]].sched.history))
        shown = varying([filter_overrides(overrides[n]) for n in nums])
        plan = plan_confs([confs[n] for n in nums], shown, history,
                          first_num=nums[0])
        extra = allocation_overrides(plan, [confs[n] for n in nums], first_num=nums[0])
        for n, ov in extra.items():  # recorded in the job's .hydra/overrides.yaml like the user's own
            overrides[n] += ov
            configs[n] = self._sweep_config(overrides[n], n)
            confs[n] = self._job_conf(configs[n])
        check(sorted(extra))
        # What the executor checks at submission (Slurm: batch-script values, the cluster), for every job first.
        executor_named(confs[nums[0]].executor.name).check_sweep([confs[n] for n in nums])
        return plan

    # -- 3. submit and gather -------------------------------------------------------------------------------
    def _submit(self, plan, specs, runs: dict[int, JobReturn], sweep_dir: Path, continues: bool) -> list[JobReturn]:
        from hpc_ft.sched import plan_table
        from hpc_ft.rundir.layout import RunDir
        from hpc_ft.rundir.spec import save_spec
        from hpc_ft.sweep import run as sweep_run

        order = {int(name): i for i, name in enumerate(plan.order)}
        entries = sorted((sweep_run.SweepEntry(n, specs[n], order[n]) for n in specs), key=lambda e: e.order_index)
        conf = entries[0].spec.conf
        executor, wait, poll_s = conf.executor.name, conf.wait, conf.executor.poll_interval_s
        for e in entries:
            save_spec(e.spec)
        table = plan_table(plan)
        sweep_run.write_plan(sweep_dir, table, sorted(specs), continues=continues)
        if not continues:
            log.info(table.split("\n\n", 1)[0])

        waited = sweep_run.submit_sweep(entries, plan.array_parallelism, sweep_dir, plan=plan.to_dict(),
                                        executor=executor, wait=wait, poll_s=poll_s, continues=continues)
        if waited:
            self._show_outcome(entries, sweep_dir)
        else:
            log.info(f"not waiting (wait=false); later: hpc-ft report {shlex.quote(str(sweep_dir))}")

        metric = self._returned_metric(conf)
        failed = []
        for e in sorted(entries, key=lambda e: e.num):
            bad = [r for r in e.reports if not r.ok]
            if bad:
                failed.append(f"#{e.num} (node " + ", ".join(f"{r.node_rank} exit {r.exit_code}" for r in bad)
                              + f"): {RunDir.of(e.spec).results}")
        for e in entries:
            ret = runs[e.num]
            if not waited:
                ret.status, ret.return_value = JobStatus.COMPLETED, None if e.job is None else str(e.job.job_id)
            elif e.ok:
                ret.status, ret.return_value = JobStatus.COMPLETED, e.reports
                if metric is not None:
                    from hpc_ft.tune.settings import final_metric

                    ret.return_value = final_metric(e.reports, metric)
            else:  # Hydra raises the first failed job's error after the launcher returns: it names them all
                ret.status = JobStatus.FAILED
                ret.return_value = SweepJobFailed(f"{len(failed)} of {len(entries)} sweep job(s) failed: "
                                                  + "; ".join(failed), e.reports)
        return [runs[n] for n in sorted(runs)]

    def _show_outcome(self, entries: list, sweep_dir: Path) -> None:
        """The jobs' results, one row each, as `hpc-ft submit` prints a single run's; then, when telemetry ran, the
        sweep report written (what `hpc-ft report SWEEP_DIR` writes) and where it is. A report that cannot be
        written never fails the sweep: the results are printed and saved already."""
        from hpc_ft.report import report_sweep
        from hpc_ft.rundir.layout import SweepDir
        from hpc_ft.sweep.outcome import results_table
        from hpc_ft.terminal import console

        assert self.config is not None
        con = console()
        # The command line's own overrides (what every job was given) would fill the overrides column.
        shared = set(OmegaConf.to_container(self.config.hydra.overrides.task, resolve=False))
        con.print(results_table(entries, sweep_dir, shared))
        if not any(e.spec.conf.telemetry.enabled for e in entries):  # as a single run: no telemetry, no report
            return
        try:
            # This batch's jobs get their report/; an earlier batch's keep theirs; sweep.json covers every job.
            report_sweep(sweep_dir, fresh={Path(e.spec.run_dir).absolute() for e in entries})
            path = SweepDir(sweep_dir).sweep_report
        except Exception as exc:  # noqa: BLE001 - the jobs' results are printed and saved already
            con.print(f"[yellow]sweep report unavailable:[/] {exc}", soft_wrap=True)
            return
        con.print(f"wrote the sweep report {path}, and each job's report/ in its run dir; print them with: "
                  f"hpc-ft report {shlex.quote(str(sweep_dir))}", soft_wrap=True, markup=False)

    def _returned_metric(self, conf: Any) -> Optional[str]:
        """tune.metric when Hydra's Optuna sweeper drives this launcher (it optimises a number per job)."""
        assert self.config is not None
        return conf.tune.metric if _optuna_sweeper(self.config) else None


def unknown_key_problems(params: Dict[str, Any]) -> list:
    """A Problem for each of a Hydra app's ``hydra.launcher.*`` keys that HpcFtLauncherConf lacks. Hydra refuses a
    misspelt key itself (exit 1) while composing, before any launcher runs, and its message suggests adding it with
    '+'; a key added so reaches the launcher, which would ignore it."""
    import dataclasses
    import difflib

    from hpc_ft.errors import Problem

    known = [f.name for f in dataclasses.fields(HpcFtLauncherConf) if f.name != "_target_"]
    problems = []
    for key in sorted(set(params) - set(known)):
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        fix = (f"did you mean hydra.launcher.{near[0]}? pass hydra.launcher.{near[0]}={params[key]} (without '+')"
               if near else f"drop it; hydra.launcher has: {', '.join(known)}")
        problems.append(Problem(f"hydra.launcher.{key}", params[key],
                                "is not a setting of the hpc_ft launcher (added with '+', it would be ignored)", fix))
    return problems


def _sweep_dir_at_setup(config: DictConfig) -> tuple:
    """(the sweep dir, what of its path does not exist before Hydra's sweeper makes it: leftovers.missing_from);
    (None, None) when its value cannot be resolved here (then nothing is removed)."""
    from hydra_plugins.hpc_ft_launcher.leftovers import missing_from

    try:
        # Resolved as the sweeper will: Hydra caches ${now:...} in this config, so both name the same dir.
        sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    except Exception:  # noqa: BLE001 - an interpolation Hydra itself reports when the sweeper resolves it
        return None, None
    return sweep_dir, missing_from(sweep_dir)


def _optuna_sweeper(config: DictConfig) -> bool:
    """Does Hydra's Optuna sweeper drive this launcher (``hydra/sweeper=optuna``)?"""
    return "optuna" in str(OmegaConf.select(config, "hydra.sweeper._target_", default="") or "").lower()


def quiet_optuna_sweeper_deprecations() -> None:
    """Ignore the FutureWarnings Hydra's Optuna sweeper causes on the Optuna hpc_ft installs.

    hydra-optuna-sweeper 1.3.0 (its last release, written for optuna<3; installed without its pins, README) passes
    TPESampler arguments and builds distributions that Optuna deprecated since: six FutureWarnings per sweep about
    the sweeper's own code, which nobody running a sweep can act on. Only those: the sampler's five deprecated
    arguments and warnings raised in the sweeper's modules. Hydra instantiates the sweeper, and its sampler, before
    the launcher's ``setup``: ``hpc-ft`` calls this before Hydra starts when the command line picks the sweeper."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning, module=r"hydra_plugins\.hydra_optuna_sweeper(\.|$)")
    warnings.filterwarnings(
        "ignore", category=FutureWarning, module=r"optuna\.samplers\._tpe\.sampler$",
        message=r"`(consider_prior|prior_weight|consider_magic_clip|consider_endpoints|warn_independent_sampling)` "
                r"has been deprecated")


class SweepJobFailed(LaunchError, CompactHydraException):
    """A sweep job whose node(s) failed; Hydra prints only this message (compact), then exits 1."""

    def __init__(self, message: str, reports: list) -> None:
        super().__init__(message)
        self.reports = reports  # every node's NodeReport of this job, failed ones included
