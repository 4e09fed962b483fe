"""The hpc_ft launcher for any Hydra application (README "Use the launcher in your own Hydra app").

A Hydra app that is not hpc_ft's own selects ``hydra/launcher=hpc_ft``: each job of its ``-m`` sweep runs its
task function as a submitit job on ``hydra.launcher.executor`` (local, debug, slurm), with the launcher's own
resources (nodes, gpus_per_node, cpus_per_task, mem_gb, timeout_min, partition, ... as Hydra's submitit launcher
names them). The request is validated by hpc_ft's rules before anything is submitted (a bad value is one error
naming ``hydra.launcher.<key>``; a refused sweep leaves nothing it made: hydra_plugins.hpc_ft_launcher.leftovers),
the sweep is planned by hpc_ft.sched within ``budget_gpus``/``budget_gpu_hours`` (its array parallelism, plan.txt
in the sweep dir), Slurm runs it as one job array, a telemetry sampler runs beside the task function on every node
(``nodes/node{r}/`` in the job's output dir, ``hpc-ft report SWEEP_DIR`` reads it), and every job's return value
goes back to Hydra. The sweep dir's manifest.json and each node's attempt record name every job's scheduler id,
as hpc_ft's own sweeps record them, for ``hpc-ft status``. On preemption or time-out submitit's checkpointing
requeues the job (the task function runs again: the app resumes from its own checkpoint).
"""

import logging
import os
import re
import shlex
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, NoReturn, Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides, run_job, setup_globals
from hydra.errors import CompactHydraException
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from hpc_ft.config.app_keys import EXECUTOR_KEYS, RESOURCE_KEYS, SCHED_KEYS, TELEMETRY_KEYS, launcher_key  # noqa: F401
from hpc_ft.errors import EXIT_BAD_CONFIG, ConfigError

log = logging.getLogger(__name__)


class LauncherConfigError(ConfigError, CompactHydraException):
    """A refused hydra.launcher.* request (raised as is only under HYDRA_FULL_ERROR=1, for its traceback)."""


def is_hpc_ft_config(cfg: DictConfig) -> bool:
    """Whether a composed config is hpc_ft's own job (it has every top-level key of JobConf)."""
    import dataclasses

    from hpc_ft.config.schema import JobConf

    keys = set(cfg.keys()) - {"hydra"}
    return {f.name for f in dataclasses.fields(JobConf)} <= keys


def app_job_conf(params: Dict[str, Any], run_dir: str, name: str, module: str, app: Optional[str] = None):
    """The JobConf of one app job: the launcher's request in hpc_ft's terms, so hpc_ft validates and plans it.
    ``app``: the app's command (``python my_app.py``), for the run report's next command."""
    from hpc_ft.config.schema import JobConf

    conf = JobConf(model={}, data={}, optim={})
    conf.executor.name = str(params.get("executor", "local"))
    for key in RESOURCE_KEYS:
        if key in params:
            setattr(conf.resources, key, params[key])
    conf.resources.workers_per_node = 1  # one task function per node: the app starts its own processes
    for key in EXECUTOR_KEYS:
        if key in params:
            setattr(conf.executor, key, params[key])
    for key in SCHED_KEYS:
        if key in params:
            setattr(conf.sched, key, params[key])
    for key, field in TELEMETRY_KEYS.items():
        if key in params:
            setattr(conf.telemetry, field, params[key])
    conf.run.dir, conf.run.name = run_dir, name
    conf.script.module = module  # the payload is the app's task function (validated as a module name)
    conf.script.hydra_app = app
    conf.wait, conf.preflight = True, bool(params.get("preflight", True))
    return conf


_DOTTED = re.compile(r"\b(resources|executor|sched|telemetry)\.(\w+)")
_BARE_EXECUTOR = re.compile(r"(?<![\w.])executor=")


def _launcher_text(text: str) -> str:
    """A rule or fix as the user of the launcher types it: ``resources.nodes=1`` -> ``hydra.launcher.nodes=1``."""
    text = _DOTTED.sub(lambda m: launcher_key(f"{m.group(1)}.{m.group(2)}"), text)
    return _BARE_EXECUTOR.sub("hydra.launcher.executor=", text)


def _refusal(exc: ConfigError) -> LauncherConfigError:
    import dataclasses

    return LauncherConfigError([dataclasses.replace(p, key=launcher_key(p.key), rule=_launcher_text(p.rule),
                                                    fix=_launcher_text(p.fix)) for p in exc.problems])


def _refuse(exc: ConfigError, sweep_dir: Path, made_from: Optional[Path]) -> NoReturn:
    """Refuse the request as hpc-ft refuses bad input: the error on stderr, exit status 2, no traceback, and
    nothing left that this launch made (the sweep dir Hydra's sweeper made for it: leftovers.discard).

    Hydra turns any exception out of a launcher into exit status 1 (and a hint about HYDRA_FULL_ERROR), so
    the refusal leaves through SystemExit, which Hydra's run_and_report lets pass. HYDRA_FULL_ERROR=1 still
    gets the exception itself, with its traceback, as Hydra's users expect. A LauncherConfigError names the
    launcher's keys already; any other ConfigError names JobConf's, which become the launcher's."""
    from hydra_plugins.hpc_ft_launcher.leftovers import discard

    refusal = exc if isinstance(exc, LauncherConfigError) else _refusal(exc)
    discard(sweep_dir, made_from)
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise refusal from None
    print(f"error: {refusal}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_BAD_CONFIG)


class AppJob:
    """One sweep job of a Hydra app as a submitit callable: the task function through Hydra's run_job, with
    the telemetry sampler beside it. Picklable (submitit ships it; a preempted job is resubmitted as is)."""

    def __init__(self, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig,
                 overrides: List[str], num: int, run_dir: str, telemetry: Dict[str, Any]) -> None:
        self.hydra_context, self.task_function, self.config = hydra_context, task_function, config
        self.overrides, self.num, self.run_dir, self.telemetry = list(overrides), num, run_dir, telemetry
        self.singleton_state = Singleton.get_state()
        self.requeues = 0  # runs of this job before this one (submitit requeues it after preemption or time-out)

    def __call__(self) -> JobReturn:
        import submitit

        Singleton.set_state(self.singleton_state)
        setup_globals()
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(self.overrides))
        env = submitit.JobEnvironment()
        with open_dict(cfg.hydra.job):
            cfg.hydra.job.id = env.job_id
            cfg.hydra.job.num = self.num
        self._record_attempt(env)
        sampler = self._start_sampler(env.global_rank)
        t0 = time.monotonic()
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=cfg,
                      job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
        self._report(env, ret, time.monotonic() - t0, sampler.stop() if sampler else {})
        return ret

    def _record_attempt(self, env: Any) -> None:
        """This node's NodeAttempt, as hpc_ft's own node tasks write it when each run starts: the job's id (an array
        task's ``ARRAY_TASK``, as submitit names it), for `hpc-ft status` while the task function runs."""
        from hpc_ft.rundir.layout import RunDir
        from hpc_ft.rundir.records import NodeAttempt

        ndir = RunDir(self.run_dir).node(env.global_rank)
        ndir.path.mkdir(parents=True, exist_ok=True)
        NodeAttempt(str(env.job_id), self.requeues, time.time()).save(ndir.attempt)

    def _start_sampler(self, rank: int):
        if not self.telemetry.get("enabled"):
            return None
        from hpc_ft.rundir.layout import RunDir
        from hpc_ft.telemetry import NodeSampler

        ndir = RunDir(self.run_dir).node(rank)
        ndir.path.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        return NodeSampler(out_dir=ndir.path, interval_s=self.telemetry["interval_s"],
                           max_report_points=self.telemetry["max_report_points"], pids=lambda: [pid],
                           idle_util_pct=self.telemetry["idle_util_pct"]).start()

    def _report(self, env: Any, ret: JobReturn, wall_s: float, telemetry: Dict[str, Any]) -> None:
        """This node's NodeReport (exit 0, or 1 with the task's error), as hpc_ft's own jobs leave one."""
        from hpc_ft.rundir.layout import RunDir
        from hpc_ft.rundir.records import NodeReport

        failed = ret.status != JobStatus.COMPLETED
        error = ""
        if failed:
            exc = ret._return_value  # the task function's exception (return_value would raise it)
            error = f"{type(exc).__name__}: {exc}"
        ndir = RunDir(self.run_dir).node(env.global_rank)
        ndir.path.mkdir(parents=True, exist_ok=True)
        NodeReport(host=socket.gethostname(), node_rank=env.global_rank, job_id=str(env.job_id),
                   exit_code=1 if failed else 0, wall_s=wall_s, telemetry=telemetry,
                   error_tail=error).save(ndir.report)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """submitit's hook on preemption or time-out: run this job again (the app resumes from its checkpoint)."""
        import copy

        import submitit

        again = copy.copy(self)
        again.requeues = self.requeues + 1
        return submitit.helpers.DelayedSubmission(again, *args, **kwargs)


def _run_dir(sweep_config: DictConfig) -> str:
    """The job's output dir (hydra.sweep.dir/hydra.sweep.subdir) resolved as run_job will resolve it."""
    hc = HydraConfig.instance()
    before = hc.cfg
    hc.set_config(sweep_config)
    try:
        out = os.path.join(str(OmegaConf.select(sweep_config, "hydra.sweep.dir")),
                           str(OmegaConf.select(sweep_config, "hydra.sweep.subdir")))
    finally:
        hc.cfg = before
    return os.path.abspath(out)


def launch_app(params: Dict[str, Any], config: DictConfig, hydra_context: HydraContext,
               task_function: TaskFunction, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int, *, unknown: Sequence[Any] = (),
               made_from: Optional[Path] = None) -> List[JobReturn]:
    """Validate, plan and submit every job of an app's sweep, wait, and return every job's JobReturn.

    ``unknown``: Problems of launcher keys the launcher lacks (refused first); ``made_from``: what of the sweep dir's
    path was missing before Hydra's sweeper made it (a sweep refused, or failing before it submits anything,
    removes it again: leftovers.discard). The sweep dir gets plan.txt and manifest.json (every job's run dir and,
    once submitted, its scheduler id: what `hpc-ft status` reads of a job that has written nothing yet)."""
    from hpc_ft.rundir.layout import SweepDir
    from hpc_ft.rundir.spec import save_spec
    from hpc_ft.sched import plan_table
    from hpc_ft.submit.executors import SweepEntry
    from hpc_ft.sweep.run import write_plan
    from hydra_plugins.hpc_ft_launcher.leftovers import discard

    setup_globals()
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    # The job name reaches sbatch and squeue: hpc_ft's safe alphabet (hpc_ft.config.validate.NAME_RE).
    name = re.sub(r"[^A-Za-z0-9._-]", "_", str(config.hydra.job.name)).lstrip("._-")[:64] or "hydra_app"
    nums = [initial_job_idx + i for i in range(len(job_overrides))]
    try:
        if unknown:
            raise LauncherConfigError(list(unknown))
        specs, executor, plan = _prepare(params, config, hydra_context, task_function, job_overrides, nums, name)
    except ConfigError as exc:
        _refuse(exc, sweep_dir, made_from)
    except BaseException:  # Slurm not reachable for the preflight, Ctrl-C: nothing submitted, nothing of it stays
        discard(sweep_dir, made_from)
        raise
    sweep_dir.mkdir(parents=True, exist_ok=True)
    # A sweeper launching in batches (Optuna) numbers the jobs on: a batch from above 0 adds its plan to plan.txt.
    continues = initial_job_idx > 0
    write_plan(sweep_dir, plan_table(plan), nums, continues=continues)
    tel = specs[nums[0]].conf.telemetry
    telemetry = {"enabled": tel.enabled, "interval_s": tel.interval_s, "max_report_points": tel.max_report_points,
                 "idle_util_pct": tel.idle_util_pct}

    order = [int(x) for x in plan.order]
    ex = executor.array_executor(specs[nums[0]], SweepDir(sweep_dir).array_submitit(0), plan.array_parallelism)
    log.info(f"hpc_ft: {len(nums)} job(s) of {name} on executor={executor.name}, at most "
             f"{plan.array_parallelism} at once; sweep dir {sweep_dir}")
    calls, entries = [], []
    for i, n in enumerate(order):
        log.info(f"\t#{n} : {' '.join(filter_overrides(job_overrides[n - initial_job_idx]))}")
        save_spec(specs[n])  # the job's request, for `hpc-ft report` (its nodes/ hold the telemetry)
        calls.append(AppJob(hydra_context, task_function, config, list(job_overrides[n - initial_job_idx]), n,
                            str(specs[n].run_dir), telemetry))
        entries.append(SweepEntry(n, specs[n], i))
    manifest = _Manifest(sweep_dir, plan.to_dict(), entries, executor.name, continues)
    manifest.record("submitting")
    # At most the plan's parallelism at once: Slurm's array bounds it, the local executor queues the jobs.
    submitted = executor.run_batch(ex, calls, plan.array_parallelism, specs[nums[0]].conf.executor.poll_interval_s)
    for e, job in zip(entries, submitted):
        e.job = job
    manifest.record("submitted")  # Slurm: the array's task ids, while the tasks still pend or run
    jobs = dict(zip(order, submitted))
    returns = [jobs[n].results()[0] for n in nums]
    manifest.finish()
    return returns


def _prepare(params: Dict[str, Any], config: DictConfig, hydra_context: HydraContext, task_function: TaskFunction,
             job_overrides: Sequence[Sequence[str]], nums: List[int], name: str):
    """Every job's JobSpec (by number), the executor and the sweep's plan; raises ConfigError for a bad request.
    Writes nothing."""
    from hpc_ft.config.script import MODULE_RE
    from hpc_ft.job import resolve
    from hpc_ft.submit.executors import executor_named, validate
    from hpc_ft.sweep.plan import plan_confs, varying

    module = str(getattr(task_function, "__module__", None) or "")
    module = module if MODULE_RE.match(module) else "hydra_app"
    # The app's command and its own hydra.* overrides (the launcher's settings among them, but not where its
    # outputs go): with a job's overrides, the command line that runs that job again (the run report's advice).
    app = "python " + shlex.quote(sys.argv[0]) if sys.argv and sys.argv[0] else None
    hydra_ovs = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)  # as typed
                 if not str(o).lstrip("+~").startswith(("hydra.sweep.", "hydra.run."))]
    specs = {}
    for n, ov in zip(nums, job_overrides):
        cfg = hydra_context.config_loader.load_sweep_config(config, list(ov))
        with open_dict(cfg):
            cfg.hydra.job.id, cfg.hydra.job.num = n, n
        conf = app_job_conf(params, _run_dir(cfg), name, module, app)
        validate(conf)
        specs[n] = resolve(conf, [*(str(o) for o in ov), *hydra_ovs])
    executor = executor_named(specs[nums[0]].conf.executor.name)
    executor.check_sweep([specs[n].conf for n in nums])
    plan = plan_confs([specs[n].conf for n in nums], varying([filter_overrides(o) for o in job_overrides]),
                      [], first_num=nums[0])
    return specs, executor, plan


class _Manifest:
    """The app sweep's manifest.json, as hpc_ft's own sweeps keep it (hpc_ft.sweep.run.write_manifest): the plan,
    each job's run dir and scheduler id, and, once the jobs ended, whether each one's every node succeeded."""

    def __init__(self, sweep_dir: Path, plan: Dict[str, Any], entries: list, executor: str, continues: bool) -> None:
        self.sweep_dir, self.plan, self.entries = sweep_dir, plan, entries
        self.executor, self.continues = executor, continues

    def record(self, state: str) -> None:
        from hpc_ft.sweep.run import write_manifest

        # wait=True: the launcher returns the jobs' values to Hydra, so it waits for every job.
        write_manifest(self.sweep_dir, self.plan, self.entries, executor=self.executor, wait=True, state=state,
                       continues=self.continues)

    def finish(self) -> None:
        """Every job's node reports (the ones AppJob wrote), then state ``finished``. A job with a node that left
        no report keeps ``ok`` unknown rather than judged by its other nodes."""
        from hpc_ft.rundir.layout import RunDir
        from hpc_ft.rundir.records import NodeReport

        for e in self.entries:
            rd = RunDir.of(e.spec)
            try:
                e.reports = [NodeReport.load(rd.node(r).report) for r in range(e.spec.nodes)]
            except (OSError, ValueError):  # RecordError is a ValueError
                e.reports = []
        self.record("finished")
