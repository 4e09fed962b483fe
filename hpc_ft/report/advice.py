"""Right-sizing advice: Hydra overrides for the next submission, each with the measurement behind it.

Every override keeps the job valid as `hpc-ft submit` sees it: fewer GPUs keep train.global_batch_size a
multiple of the new world size, a smaller micro-batch keeps the effective batch. Rules are conservative
(clear waste or clear danger), so a well-sized job gets no advice.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass
from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.report.rows import GpuRow, NodeRow

GPU_MEM_FULL = 0.90  # GPU memory peak at or above this share of capacity: out-of-memory risk
# The job's RSS peak at or above this share of resources.mem_gb gets a larger request. 85%, not 90%: RSS is
# sampled every telemetry interval (a peak between two samples is missed), and Slurm's cgroup limit counts
# page cache and shared memory beside the processes' RSS, so a run seen at 87% is already close to being killed.
HOST_MEM_FULL = 0.85
HOST_MEM_HEADROOM = 1.25  # suggested mem_gb = peak x this (+1 GiB), rounded up to an even number
TIME_HEADROOM = 1.5  # suggested timeout = wall x this + 5 min, rounded up to 5 min
MEMORY_HEADROOM = 0.8  # a larger micro-batch is advised only if its predicted peak stays under this share
MIN_SAVING = 0.5  # only suggest shrinking a request to at most half of it (smaller cuts are noise)


@dataclass
class Advice:
    """One override for the next submission and why."""

    key: str
    value: Any
    reason: str

    @property
    def override(self) -> str:
        return f"{self.key}={self.value}"


def _ceil_to(x: float, step: int) -> int:
    return int(math.ceil(x / step) * step)


def _user_set(spec: JobSpec, key: str) -> bool:
    return any(o.lstrip("+~").split("=", 1)[0] == key for o in spec.overrides)


def _gpu_advice(spec: JobSpec, node_rows: list[NodeRow], gpu_rows: list[GpuRow]) -> list[Advice]:
    r, t = spec.conf.resources, spec.conf.train
    if r.gpus_per_node <= 0 or not gpu_rows:
        return []
    idle_thr = spec.conf.telemetry.idle_util_pct
    busy_per_node = [sum(not g.idle for g in gpu_rows if g.node == n.node) for n in node_rows
                     if n.gpus]
    needed = max(busy_per_node, default=0)
    idle = [g for g in gpu_rows if g.idle]
    if not idle or needed >= r.gpus_per_node:
        return []
    where = ", ".join(f"node {g.node} GPU {g.index} ({100 * g.idle_fraction:.0f}% of samples)"
                      for g in idle[:4]) + (" ..." if len(idle) > 4 else "")
    if needed == 0:
        new, why = 1, (f"every GPU sat below {idle_thr:g}% utilization for most of the run ({where}); "
                       "one GPU per node is plenty — check the model actually runs on the GPU")
    else:
        new, why = needed, (f"{len(idle)} of {len(gpu_rows)} GPUs sat below {idle_thr:g}% utilization for most "
                            f"of the run ({where}); at most {needed} per node did work")
    out: list[Advice] = []
    # Keep train.global_batch_size a multiple of nodes x workers x grad_accum_steps, or validation would refuse it:
    # take the smallest GPU count from `new` up that divides it, else adjust the batch to the nearest fit.
    fit = next((g for g in range(new, r.gpus_per_node)
                if t.global_batch_size % (r.nodes * g * t.grad_accum_steps) == 0), None)
    if fit is None:
        per_step = r.nodes * new * t.grad_accum_steps
        batch = max(per_step, round(t.global_batch_size / per_step) * per_step)
        out.append(Advice("train.global_batch_size", batch, f"a multiple of {r.nodes} node(s) x {new} worker(s) x "
                          f"{t.grad_accum_steps} accumulation step(s), as {new} GPU(s) per node require"))
        fit = new
    out.insert(0, Advice("resources.gpus_per_node", fit, why))
    if _user_set(spec, "resources.workers_per_node") and (r.workers_per_node or 0) > fit:
        out.append(Advice("resources.workers_per_node", fit, "one worker per remaining GPU"))
    return out


def _gpu_memory_advice(spec: JobSpec, gpu_rows: list[GpuRow]) -> list[Advice]:
    full = [g for g in gpu_rows if g.mem_peak_pct is not None and g.mem_peak_pct >= 100 * GPU_MEM_FULL]
    if not full:
        return []
    r, t = spec.conf.resources, spec.conf.train
    worst = max(full, key=lambda g: g.mem_peak_pct)
    accum = t.grad_accum_steps * 2
    workers = spec.workers_per_node
    if t.global_batch_size % (r.nodes * workers * accum):
        return []  # the micro-batch cannot be halved exactly; the table still shows the peak
    return [Advice("train.grad_accum_steps", accum,
                   f"GPU memory peaked at {worst.mem_peak_gb:.1f} of {worst.mem_total_gb:.1f} GiB "
                   f"({worst.mem_peak_pct:.0f}%, node {worst.node} GPU {worst.index}): halving the "
                   "micro-batch keeps the effective batch and leaves room against out-of-memory")]


def _memory_headroom_advice(spec: JobSpec, memory: dict) -> list[Advice]:
    """Half the accumulation steps (a micro-batch twice as large: fewer, fuller steps) when the measured peak plus
    the estimate's activations (what doubles with the micro-batch) stays under MEMORY_HEADROOM of the GPU."""
    t = spec.conf.train
    measured, usable = memory.get("measured_bytes"), memory.get("usable_bytes")
    grows = memory.get("estimated_activation_bytes")
    if not (measured and usable and grows) or t.grad_accum_steps < 2 or t.grad_accum_steps % 2:
        return []
    predicted = measured + grows
    if predicted > MEMORY_HEADROOM * usable:
        return []
    gib = 1024 ** 3
    return [Advice("train.grad_accum_steps", t.grad_accum_steps // 2,
                   f"the measured peak was {measured / gib:.1f} GiB of {usable / gib:.1f} GiB usable per GPU; with "
                   f"the estimate's {grows / gib:.1f} GiB of activations doubled it would be {predicted / gib:.1f} "
                   "GiB: a micro-batch twice as large fits, with fewer, fuller steps")]


def _host_memory_advice(spec: JobSpec, node_rows: list[NodeRow]) -> list[Advice]:
    peaks = [n.job_rss_peak_gb for n in node_rows if n.job_rss_peak_gb is not None]
    if not peaks:
        return []
    mem_gb, peak = spec.conf.resources.mem_gb, max(peaks)
    if peak >= HOST_MEM_FULL * mem_gb:
        new = max(_ceil_to(peak * 1.5, 2), _ceil_to(mem_gb + 1, 2))
        return [Advice("resources.mem_gb", new, f"the job's resident memory peaked at {peak:.1f} GiB of the "
                       f"{mem_gb:g} GiB requested per node ({100 * peak / mem_gb:.0f}%, at least "
                       f"{100 * HOST_MEM_FULL:.0f}%): too close to the limit (the kernel kills the job at it)")]
    new = max(2, _ceil_to(peak * HOST_MEM_HEADROOM + 1, 2))
    if new <= MIN_SAVING * mem_gb:
        return [Advice("resources.mem_gb", new, f"the job's resident memory peaked at {peak:.1f} GiB of the "
                       f"{mem_gb:g} GiB requested per node; {new} GiB: the peak x {HOST_MEM_HEADROOM:g} + 1 GiB, "
                       "rounded up to an even number of GiB")]
    return []


def _time_advice(spec: JobSpec, node_rows: list[NodeRow], totals: dict) -> list[Advice]:
    limit = spec.conf.resources.timeout_min
    wall_s = totals.get("wall_s")
    if wall_s is None or not node_rows:
        return []
    wall_min = wall_s / 60
    finished = all(n.status == "ok" for n in node_rows)
    hit_limit = any(n.status == "preempted" for n in node_rows) and wall_min >= 0.9 * limit
    if hit_limit:
        new = _ceil_to(limit * 2, 5)
        return [Advice("resources.timeout_min", new, f"the run used {wall_min:.0f} of its {limit} min and was "
                       "stopped to requeue; a longer limit avoids paying the restart and queue wait again")]
    new = max(5, _ceil_to(wall_min * TIME_HEADROOM + 5, 5))
    if finished and new <= MIN_SAVING * limit:
        reserved = totals.get("gpus_requested") or 0
        extra = f", and reserves {reserved * (limit - new) / 60:.1f} fewer GPU-hours" if reserved else ""
        return [Advice("resources.timeout_min", new, f"the run finished in {wall_min:.1f} min of its {limit} min "
                       f"limit; a tighter limit starts sooner (backfill){extra}")]
    return []


def _cpu_advice(spec: JobSpec, node_rows: list[NodeRow], gpu_rows: list[GpuRow]) -> list[Advice]:
    cpus = spec.conf.resources.cpus_per_task
    p95 = [n.job_cpu_cores_p95 for n in node_rows if n.job_cpu_cores_p95 is not None]
    if not p95 or not gpu_rows:
        return []  # CPU training uses every CPU it is given by design (threads = cpus_per_task)
    used = max(p95)
    new = max(2, _ceil_to(used * 2, 2))
    if cpus >= 8 and new <= MIN_SAVING * cpus:
        return [Advice("resources.cpus_per_task", new, f"the job's processes used at most {used:.1f} cores "
                       f"(95th percentile) of {cpus}")]
    utils = [g.util_mean_pct for g in gpu_rows if g.util_mean_pct is not None]
    if utils and max(utils) < 50 and used >= 0.9 * cpus:
        return [Advice("resources.cpus_per_task", cpus * 2, f"the job kept all {cpus} CPUs busy while the GPUs "
                       f"averaged under 50% utilization: input processing is the bottleneck")]
    return []


def advise(spec: JobSpec, node_rows: list[NodeRow], gpu_rows: list[GpuRow], totals: dict,
           memory: dict | None = None) -> list[Advice]:
    """Every override worth making for the next submission of ``spec``, each with its reason. ``memory``: the
    report's peak memory per worker, estimated and measured (``report.build.memory_figures``)."""
    out = (_gpu_advice(spec, node_rows, gpu_rows) + _gpu_memory_advice(spec, gpu_rows)
           + _memory_headroom_advice(spec, memory or {})
           + _host_memory_advice(spec, node_rows) + _time_advice(spec, node_rows, totals)
           + _cpu_advice(spec, node_rows, gpu_rows))
    seen: dict[str, Advice] = {}
    for a in out:  # one value per key; the first rule that set it wins
        seen.setdefault(a.key, a)
    if not _batch_fits(spec, seen):  # fewer GPUs and a halved micro-batch together may not divide the batch
        seen.pop("train.grad_accum_steps", None)
    if spec.conf.script.hydra_app:  # a Hydra app's job: its request is the launcher's, under the launcher's names
        from hpc_ft.config.app_keys import launcher_key

        return [Advice(launcher_key(a.key), a.value, a.reason) for a in seen.values()
                if a.key.split(".")[0] in ("resources", "executor", "sched", "telemetry")]
    return list(seen.values())


def _batch_fits(spec: JobSpec, advice: dict[str, Advice]) -> bool:
    """Whether train.global_batch_size stays a multiple of nodes x workers x grad_accum_steps after ``advice``."""
    r, t = spec.conf.resources, spec.conf.train

    def get(key: str, default: Any) -> Any:
        return advice[key].value if key in advice else default

    gpus = get("resources.gpus_per_node", r.gpus_per_node)
    workers = get("resources.workers_per_node", min(spec.workers_per_node, gpus) if gpus else spec.workers_per_node)
    per_step = get("resources.nodes", r.nodes) * workers * get("train.grad_accum_steps", t.grad_accum_steps)
    return get("train.global_batch_size", t.global_batch_size) % per_step == 0


def next_overrides(spec: JobSpec, advice: list[Advice]) -> list[str]:
    """The job's own overrides with the advised ones replacing theirs (run dirs dropped: a new run). A script's
    ``script.path`` is the absolute path the job ran (a relative one would name another file, or none, when the
    command is pasted in another directory)."""
    keys = {a.key for a in advice}
    kept = [_absolute_script(o, spec) for o in spec.overrides
            if o.lstrip("+~").split("=", 1)[0] not in keys | {"run.dir", "hydra.run.dir", "hydra.sweep.dir"}]
    return kept + [a.override for a in advice]


def _absolute_script(override: str, spec: JobSpec) -> str:
    key = override.lstrip("+").split("=", 1)[0]
    if key != "script.path" or not spec.conf.script.path:
        return override
    from hpc_ft.config.overrides import hydra_quote

    path = spec.conf.script.path  # made absolute by resolve() when the job was submitted
    prefix = override[: len(override) - len(override.lstrip("+"))]
    return f"{prefix}{key}={path}" if re.fullmatch(r"[\w./-]+", path) else prefix + hydra_quote(key, path)


def next_command(spec: JobSpec, advice: list[Advice]) -> str:
    """`hpc-ft submit ...` with every advised override, quoted for a POSIX shell; for a job of a user's own Hydra
    app, the app's command (``python my_app.py -m ...``) with that job's overrides and the launcher's settings."""
    app = spec.conf.script.hydra_app
    head = [app, "-m"] if app else ["hpc-ft", "submit"]
    return " ".join([*head, *(shlex.quote(o) for o in next_overrides(spec, advice))])
