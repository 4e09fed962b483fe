"""Preflight validation of a composed job: every problem at once, before anything is dispatched."""

from __future__ import annotations

import math
import os
import re
import signal
from typing import Callable, Mapping, Protocol

from hpc_ft.config.fit_rules import fit_problems
from hpc_ft.config.script import script_problems, uses_script
from hpc_ft.config.schema import (SCHED_OBJECTIVES, SCHED_ORDERS, SCHED_POLICIES, TRACKING_BACKENDS, JobConf,
                                  SchedConf)
from hpc_ft.errors import ConfigError, Problem

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Job names reach sbatch, squeue and file names: keep them to a safe alphabet rather than quote everywhere.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Preemption signals a job can catch and checkpoint on; each one's default action ends the process, so a
# program without a handler still stops. Not ALRM/VTALRM/PROF: libraries and profilers set timers with them.
# sbatch(1) on --signal: "sig_time must have an integer value between 0 and 65535".
PREEMPT_SIGNALS = ("USR2", "TERM", "INT", "HUP", "QUIT", "XCPU")
SLURM_MAX_SIGNAL_DELAY_S = 65535


def local_gpu_count() -> int:
    """GPUs visible through NVML on this machine (0 without a driver); cheap, never imports torch."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no GPU: all mean "no GPU here"
        return 0


class ExecutorRules(Protocol):
    """What validation needs from the executor a job names (``executor.name``).

    The executors live in ``hpc_ft.submit.executors`` (one module each, found through its registry), above this
    layer: ``validate`` is handed the registry rather than importing it.
    """

    name: str

    def workers_per_node(self, conf: JobConf) -> int:
        """torchrun processes per node on this executor."""
        ...

    def problems(self, conf: JobConf, gpu_count: Callable[[], int]) -> list[Problem]:
        """What this executor cannot run (``gpu_count``: GPUs on this machine, called only when needed)."""
        ...

    def warnings(self, conf: JobConf) -> list[str]:
        """What this executor will run differently from the request, without refusing it."""
        ...


def workers_per_node(conf: JobConf) -> int:
    """torchrun processes per node: as configured, else one per GPU, else 2 CPU workers.

    An executor may differ (the debug executor trains one worker in-process): its ``workers_per_node`` is pinned
    into ``resources.workers_per_node`` by ``hpc_ft.submit.executors.resolve``, so a resolved spec reads it here.
    """
    r = conf.resources
    if r.workers_per_node is not None:
        return r.workers_per_node
    return r.gpus_per_node if r.gpus_per_node > 0 else 2


def host_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, as Slurm or taskset leave it; else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity call (macOS)
        return os.cpu_count() or 1


def threads_per_worker(conf: JobConf, host_cpus: int | None = None) -> int:
    """Torch intra-op threads (and OMP_NUM_THREADS) of each worker, never below 1.

    ``train.num_threads`` when set; else the node's CPUs (``resources.cpus_per_task``) split among its workers.
    ``host_cpus``: every node of the job runs on one host of that many CPUs (the local executor's emulated nodes),
    so no worker gets more than the host's CPUs split among the workers of every node (2 nodes x 1 worker on 2
    CPUs: 1 thread each, not 2: oversubscribed CPUs run several times slower).
    """
    if conf.train.num_threads:
        return conf.train.num_threads
    # max(1, ...): an invalid request (resources.nodes=0) is refused by validate with its own message; the checks
    # that run beside it (every problem at once) still get a thread count.
    workers = max(1, workers_per_node(conf))
    threads = conf.resources.cpus_per_task // workers
    if host_cpus is not None:
        threads = min(threads, host_cpus // max(1, conf.resources.nodes * workers))
    return max(1, threads)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def sweep_setting_problems(policy: object, order: object, objective: object, array_parallelism: object,
                           budget_gpus: object, budget_gpu_hours: object, budget_money: object) -> list[Problem]:
    """Problems of the sweep-wide sched.* settings: the one place they are checked.

    ``validate`` checks them in every composed job; ``hpc_ft.sched.planner`` calls this for the same values
    given to ``plan_sweep`` directly (GPU budgets in GPUs, GPU-hours and money units; None: no limit).
    """
    p: list[Problem] = []

    def need(ok: bool, key: str, value: object, rule: str, fix: str) -> None:
        if not ok:
            p.append(Problem(key, value, rule, fix))

    need(policy in SCHED_POLICIES, "sched.policy", policy, f"must be one of {', '.join(SCHED_POLICIES)}",
         "pass sched.policy=equal")
    need(order in SCHED_ORDERS, "sched.order", order, f"must be one of {', '.join(SCHED_ORDERS)}",
         "pass sched.order=fcfs")
    need(objective in SCHED_OBJECTIVES, "sched.objective", objective,
         f"must be one of {', '.join(SCHED_OBJECTIVES)}", "pass sched.objective=makespan")
    need(array_parallelism is None or (_is_int(array_parallelism) and array_parallelism >= 1),
         "sched.array_parallelism", array_parallelism, "must be a whole number, at least 1",
         "pass sched.array_parallelism=2 or leave it unset")
    need(budget_gpus is None or (_is_int(budget_gpus) and budget_gpus >= 1), "sched.budget_gpus", budget_gpus,
         "must be a whole number of GPUs, at least 1", "pass sched.budget_gpus=8 or leave it unset")
    for key, value in (("sched.budget_gpu_hours", budget_gpu_hours), ("sched.budget_money", budget_money)):
        need(value is None or _positive(value), key, value, "must be a positive number",
             f"pass {key}=100 or leave it unset")
    return p


def sched_problems(s: SchedConf, nodes: int, gpus_per_node: int) -> list[Problem]:
    """Problems of the sweep settings (sched.*): the sweep-wide ones (shared with the planner), then this job's."""
    p = sweep_setting_problems(s.policy, s.order, s.objective, s.array_parallelism, s.budget_gpus,
                               s.budget_gpu_hours, s.budget_money)

    def need(ok: bool, key: str, value: object, rule: str, fix: str) -> None:
        if not ok:
            p.append(Problem(key, value, rule, fix))

    for key in ("min_gpus", "max_gpus"):
        v = getattr(s, key)
        need(v is None or v >= 1, f"sched.{key}", v, "must be a whole number, at least 1",
             f"pass sched.{key}=2 or leave it unset")
    v = s.est_duration_h
    need(v is None or (math.isfinite(v) and v > 0), "sched.est_duration_h", v, "must be a positive number",
         "pass sched.est_duration_h=1.0 or leave it unset")
    need(math.isfinite(s.priority), "sched.priority", s.priority, "must be a finite number", "pass sched.priority=1")
    need(0.0 <= s.parallel_fraction <= 1.0, "sched.parallel_fraction", s.parallel_fraction,
         "must be within [0, 1] (Amdahl's p)", "pass sched.parallel_fraction=1.0")
    if s.min_gpus is not None or s.max_gpus is not None:
        lo = gpus_per_node if s.min_gpus is None else s.min_gpus
        hi = gpus_per_node if s.max_gpus is None else s.max_gpus
        need(gpus_per_node > 0 and nodes == 1, "sched.min_gpus..max_gpus", f"{s.min_gpus}..{s.max_gpus}",
             "a GPU range applies to one-node GPU jobs only (the planner sets resources.gpus_per_node)",
             "drop sched.min_gpus/max_gpus, or pass resources.nodes=1 and resources.gpus_per_node>=1")
        need(lo <= hi, "sched.min_gpus..max_gpus", f"{lo}..{hi}", "min must not exceed max",
             f"pass sched.max_gpus={lo}")
    return p


def signal_problems(name: str, delay_s: int, timeout_min: int) -> list[Problem]:
    """Problems of the preemption signal (``executor.preempt_signal``) and its lead time.

    The signal must be one torchrun can forward and the training loop can catch: KILL and STOP cannot be
    caught (torchrun fails at start with EINVAL), job-control and ignored-by-default signals would stop or
    be lost, fault signals mean a crash, and USR1 is NCCL's own.
    """
    p: list[Problem] = []
    sig = str(name).upper().removeprefix("SIG")
    fix = f"pass executor.preempt_signal=USR2 (allowed: {', '.join(PREEMPT_SIGNALS)})"
    if sig == "USR1":
        p.append(Problem("executor.preempt_signal", name, "USR1 is reserved by NCCL", fix))
    elif f"SIG{sig}" not in signal.Signals.__members__:  # Signals holds names only (not SIG_DFL, SIG_IGN)
        p.append(Problem("executor.preempt_signal", name, "is not a signal name", fix))
    elif sig not in PREEMPT_SIGNALS:
        p.append(Problem("executor.preempt_signal", name,
                         "must be a signal the job can catch and checkpoint on (not KILL/STOP, which cannot be "
                         "caught, nor job-control, ignored-by-default or fault signals)", fix))
    where = "executor.preempt_signal_delay_s"
    if not 0 <= delay_s <= SLURM_MAX_SIGNAL_DELAY_S:
        p.append(Problem(where, delay_s, f"must be within [0, {SLURM_MAX_SIGNAL_DELAY_S}] seconds (Slurm's range "
                         "for the time in --signal=SIG@time)", f"pass {where}=120"))
    elif timeout_min >= 1 and delay_s >= timeout_min * 60:
        p.append(Problem(where, delay_s, f"the signal must come before the time limit: resources.timeout_min="
                         f"{timeout_min} is {timeout_min * 60} s, so a delay this long would signal at the start",
                         f"pass {where}={min(120, timeout_min * 60 // 2)} or raise resources.timeout_min"))
    return p


def validate(conf: JobConf, gpu_count: Callable[[], int] = local_gpu_count, *,
             executors: Mapping[str, ExecutorRules]) -> list[str]:
    """Raise ConfigError listing every problem in ``conf``; return warnings that do not block the job.

    ``executors``: the registered executors by name (``hpc_ft.submit.executors.REGISTRY``); the one ``conf``
    names adds its own rules, an unknown name is one more problem. Commands call
    ``hpc_ft.submit.executors.validate``, which passes the registry.
    """
    p: list[Problem] = []
    warnings: list[str] = []
    r, ex = conf.resources, conf.executor
    rules = executors.get(ex.name)

    def need(ok: bool, key: str, value: object, rule: str, fix: str) -> None:
        if not ok:
            p.append(Problem(key, value, rule, fix))

    need(conf.precision.dtype in PRECISIONS, "precision", conf.precision.dtype,
         f"must be one of {', '.join(PRECISIONS)}", "pass precision=auto (or bf16, fp32, fp16)")
    need(conf.tracking.backend in TRACKING_BACKENDS, "tracking", conf.tracking.backend,
         f"must be one of {', '.join(TRACKING_BACKENDS)}", "pass tracking=tensorboard (or mlflow, off)")
    if conf.tracking.backend == "mlflow":
        import importlib.util

        need(importlib.util.find_spec("mlflow") is not None, "tracking", "mlflow",
             "needs the mlflow package, which is an optional extra",
             "pip install 'hpc_ft[mlflow]' (mlflow-skinny), or pass tracking=tensorboard")
    names = list(executors)
    need(rules is not None, "executor", ex.name, f"must be one of {', '.join(names)}",
         f"pass executor={names[0]}" + (f" (or {', '.join(names[1:])})" if names[1:] else ""))
    need(r.nodes >= 1, "resources.nodes", r.nodes, "must be at least 1", "pass resources.nodes=1")
    need(r.gpus_per_node >= 0, "resources.gpus_per_node", r.gpus_per_node,
         "must be 0 (CPU) or more", "pass resources.gpus_per_node=0")
    if r.workers_per_node is not None:
        need(r.workers_per_node >= 1, "resources.workers_per_node", r.workers_per_node,
             "must be at least 1", "drop it to use one worker per GPU")
        if r.gpus_per_node > 0 and r.workers_per_node > r.gpus_per_node:
            p.append(Problem("resources.workers_per_node", r.workers_per_node,
                             f"more workers than GPUs per node ({r.gpus_per_node})",
                             f"pass resources.workers_per_node={r.gpus_per_node} or raise resources.gpus_per_node"))
    need(r.cpus_per_task >= 1, "resources.cpus_per_task", r.cpus_per_task, "must be at least 1",
         "pass resources.cpus_per_task=2")
    need(r.gpu_mem_gb is None or (math.isfinite(r.gpu_mem_gb) and r.gpu_mem_gb > 0), "resources.gpu_mem_gb",
         r.gpu_mem_gb, "must be a positive number of GB (the memory of one GPU)", "pass resources.gpu_mem_gb=80")
    need(math.isfinite(r.mem_gb) and round(r.mem_gb * 1024) >= 1, "resources.mem_gb", r.mem_gb,
         "must be at least 1/1024 GB: Slurm counts memory in whole MiB, and a value that rounds to --mem=0M "
         "asks for all of the node's memory", "pass resources.mem_gb=8")
    need(r.timeout_min >= 1, "resources.timeout_min", r.timeout_min, "must be at least 1 minute",
         "pass resources.timeout_min=60")
    need(NAME_RE.match(conf.run.name or "") is not None, "run.name", conf.run.name,
         "must be 1-64 characters of letters, digits, '.', '_', '-' (it reaches sbatch and file names)",
         "pass run.name=my_finetune")
    for k in ex.env:
        need(ENV_KEY_RE.match(str(k)) is not None, f"executor.env.{k}", k,
             "is not a valid environment variable name", "use letters, digits and '_' only")

    p += signal_problems(ex.preempt_signal, ex.preempt_signal_delay_s, r.timeout_min)
    need(ex.max_requeues >= 0, "executor.max_requeues", ex.max_requeues, "must be 0 or more",
         "pass executor.max_requeues=3")
    need(ex.max_restarts >= 0, "executor.max_restarts", ex.max_restarts, "must be 0 or more",
         "pass executor.max_restarts=0")

    workers = rules.workers_per_node(conf) if rules is not None else workers_per_node(conf)
    # A user's script reads its own model, data and schedule: only hpc_ft's loop reads those keys.
    p += script_problems(conf) if uses_script(conf) else loop_problems(conf, workers)
    warnings += [] if uses_script(conf) else loop_warnings(conf)

    tel = conf.telemetry
    need(math.isfinite(tel.interval_s) and tel.interval_s > 0, "telemetry.interval_s", tel.interval_s,
         "must be a positive number", "pass telemetry.interval_s=1.0")
    need(math.isfinite(tel.idle_util_pct) and 0 <= tel.idle_util_pct <= 100, "telemetry.idle_util_pct",
         tel.idle_util_pct, "must be a percentage within [0, 100]", "pass telemetry.idle_util_pct=5")
    for key in ("price_per_gpu_hour", "price_per_kwh", "price_per_node_hour"):
        v = getattr(tel, key)
        need(math.isfinite(v) and v >= 0, f"telemetry.{key}", v, "must be 0 or a positive number",
             f"pass telemetry.{key}=0 to leave it out of the cost")
    need(tel.gpu_peak_tflops is None or (math.isfinite(tel.gpu_peak_tflops) and tel.gpu_peak_tflops > 0),
         "telemetry.gpu_peak_tflops", tel.gpu_peak_tflops, "must be a positive number",
         "leave it unset to look the GPU up, or pass telemetry.gpu_peak_tflops=989")
    need(math.isfinite(ex.poll_interval_s) and ex.poll_interval_s > 0, "executor.poll_interval_s",
         ex.poll_interval_s, "must be a positive number of seconds", "pass executor.poll_interval_s=1.0")
    need(tel.max_report_points >= 2, "telemetry.max_report_points", tel.max_report_points,
         "must be at least 2", "pass telemetry.max_report_points=600")
    p += sched_problems(conf.sched, r.nodes, r.gpus_per_node)
    p += fit_problems(conf)  # peft, train.strategy

    if rules is not None:
        p += rules.problems(conf, gpu_count)
        warnings += rules.warnings(conf)
    if conf.precision.dtype == "fp16" and r.gpus_per_node == 0:
        warnings.append("precision=fp16 on CPU is emulated and very slow; prefer precision=bf16 or fp32 on CPU")

    if p:
        raise ConfigError(p)
    return warnings


def loop_problems(conf: JobConf, workers: int) -> list[Problem]:
    """Problems of what only hpc_ft's own loop reads: model, data, optim and train.* (``workers`` per node)."""
    p: list[Problem] = []
    r, t = conf.resources, conf.train

    def need(ok: bool, key: str, value: object, rule: str, fix: str) -> None:
        if not ok:
            p.append(Problem(key, value, rule, fix))

    for group in ("task", "model", "data", "optim"):
        node = getattr(conf, group)
        ok = isinstance(node, dict) and isinstance(node.get("_target_"), str) and node["_target_"]
        need(bool(ok), f"{group}._target_", node.get("_target_") if isinstance(node, dict) else node,
             "must name the callable that builds it", f"pick a {group} config, e.g. {group}=<name> from conf/{group}/")
    optim = conf.optim if isinstance(conf.optim, dict) else {}
    if "lr" in optim:
        lr = optim["lr"]
        need(isinstance(lr, (int, float)) and lr > 0, "optim.lr", lr, "must be a positive number",
             "pass optim.lr=3e-5")

    need(t.max_steps >= 1, "train.max_steps", t.max_steps, "must be at least 1", "pass train.max_steps=200")
    need(t.grad_accum_steps >= 1, "train.grad_accum_steps", t.grad_accum_steps, "must be at least 1",
         "pass train.grad_accum_steps=1")
    world = max(r.nodes, 1) * max(workers, 1)
    per_step = world * max(t.grad_accum_steps, 1)
    if t.global_batch_size < 1 or t.global_batch_size % per_step:
        fit = max(per_step, (t.global_batch_size // per_step) * per_step)
        p.append(Problem("train.global_batch_size", t.global_batch_size,
                         f"must be a positive multiple of grad_accum_steps x workers = {t.grad_accum_steps} x "
                         f"{world} = {per_step}", f"pass train.global_batch_size={fit}"))
    need(t.eval_micro_batch_size >= 1, "train.eval_micro_batch_size", t.eval_micro_batch_size, "must be at least 1",
         "pass train.eval_micro_batch_size=64")
    for key in ("eval_every_steps", "ckpt_every_steps", "warmup_steps"):
        v = getattr(t, key)
        need(v >= 0, f"train.{key}", v, "must be 0 or more", f"pass train.{key}=0")
    need(t.log_every_steps >= 1, "train.log_every_steps", t.log_every_steps, "must be at least 1",
         "pass train.log_every_steps=10")
    need(t.keep_checkpoints >= 1, "train.keep_checkpoints", t.keep_checkpoints, "must be at least 1",
         "pass train.keep_checkpoints=2")
    need(0.0 <= t.min_lr_ratio <= 1.0, "train.min_lr_ratio", t.min_lr_ratio, "must be within [0, 1]",
         "pass train.min_lr_ratio=0.1")
    need(t.grad_clip_norm >= 0, "train.grad_clip_norm", t.grad_clip_norm, "must be 0 (off) or positive",
         "pass train.grad_clip_norm=1.0")
    return p


def loop_warnings(conf: JobConf) -> list[str]:
    """What hpc_ft's own loop will run, though probably not as meant: a warmup longer than the run, whose learning
    rate never reaches optim.lr.

    A warning, not a refusal: the warmup's ramp does not depend on train.max_steps (``hpc_ft.train.optim.lr_lambda``),
    and a resumed run may lengthen the run (``hpc_ft.train.resume``: train.max_steps may grow, with a warning), so a
    first leg shorter than the warmup continues the same ramp; and the default warmup (20 steps) is longer than the
    short runs of smoke tests and examples (README's Python example: train.max_steps=5).
    """
    t = conf.train
    if not 1 <= t.max_steps < t.warmup_steps:
        return []
    reached = 100 * t.max_steps / t.warmup_steps
    tenth = t.max_steps // 10
    return [f"train.warmup_steps={t.warmup_steps}: longer than the run (train.max_steps={t.max_steps}), so the "
            f"learning rate only reaches {reached:.3g}% of optim.lr and never decays. Fix: pass train.warmup_steps="
            f"{tenth} ({'a tenth of the run' if tenth else 'no warmup'}), or keep it for a run you will resume with "
            "a larger train.max_steps"]


def split_problems(num_train: int, num_test: int, key: str, value: object, fix: str,
                   global_batch_size: int | None = None,
                   world_size: int | None = None) -> tuple[list[Problem], list[str]]:
    """Problems and warnings of a dataset's split sizes (samples) against the global batch and the world size.

    An empty train split cannot make a global batch (the sample order divides by its size); an empty test split
    would report an accuracy over no samples. A train split smaller than the global batch repeats samples within
    a step, and a test split smaller than the world size leaves ranks without evaluation samples: both still
    train and evaluate correctly, so they only warn. ``key``/``value``/``fix`` name the setting that sizes the splits.
    """
    p: list[Problem] = []
    warnings: list[str] = []
    sizes = f"{num_train} train and {num_test} test sample(s)"
    if num_train < 1:
        p.append(Problem(key, value, f"leaves an empty train split ({sizes})", fix))
    if num_test < 1:
        p.append(Problem(key, value, f"leaves an empty test split ({sizes}): evaluation would have no samples", fix))
    if p:
        return p, warnings
    if global_batch_size is not None and num_train < global_batch_size:
        warnings.append(f"{key}={value!r}: the train split ({num_train} samples) is smaller than the global batch "
                        f"(train.global_batch_size={global_batch_size}): every step repeats samples; lower "
                        f"train.global_batch_size or use more data")
    if world_size is not None and num_test < world_size:
        warnings.append(f"{key}={value!r}: the test split ({num_test} samples) is smaller than the world size "
                        f"({world_size}): {world_size - num_test} rank(s) evaluate no sample (the accuracy still "
                        f"counts every sample once)")
    return p, warnings
