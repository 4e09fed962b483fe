"""The keys of hpc_ft's Hydra launcher (``hydra.launcher.<key>`` in a user's own Hydra app) and the JobConf keys that
carry them: one table for the launcher, which builds a job from them, and for the run report, whose advice for
such a job must name the launcher's keys (``hydra.launcher.mem_gb=2``, not ``resources.mem_gb=2``)."""

from __future__ import annotations

# hydra.launcher.<key> -> the JobConf group that carries it under the same name.
RESOURCE_KEYS = ("nodes", "gpus_per_node", "gpu_type", "cpus_per_task", "mem_gb", "timeout_min", "partition",
                 "account", "qos", "constraint")
EXECUTOR_KEYS = ("preempt_signal", "preempt_signal_delay_s", "max_requeues", "setup", "env", "extra_sbatch")
SCHED_KEYS = ("array_parallelism", "budget_gpus", "budget_gpu_hours", "est_duration_h")
TELEMETRY_KEYS = {"telemetry": "enabled", "telemetry_interval_s": "interval_s"}  # launcher key -> telemetry.<field>


def launcher_key(key: str) -> str:
    """A JobConf key as the launcher's own, what the app's user types: ``resources.mem_gb`` ->
    ``hydra.launcher.mem_gb``; a key the launcher does not carry is named as ``hydra.launcher (key)``."""
    head, _, tail = key.partition(".")
    if head == "executor" and not tail:
        return "hydra.launcher.executor"
    if head in ("resources", "executor", "sched"):
        return f"hydra.launcher.{tail}"
    if head == "telemetry":
        return "hydra.launcher." + {v: k for k, v in TELEMETRY_KEYS.items()}.get(tail, f"telemetry_{tail}")
    return f"hydra.launcher ({key})"
