"""JobSpec -> submitit SlurmExecutor parameters (pure) and the executor itself."""

from __future__ import annotations

import shlex
from typing import Any

from hpc_ft.job import JobSpec
from hpc_ft.node.launch import signal_name


def slurm_setup_lines(spec: JobSpec) -> list[str]:
    """Shell lines run before the node task: the user's setup, then quoted exports.

    The user's own ``executor.setup`` lines are trusted shell (module loads); every other value is
    quoted here, once.
    """
    ex = spec.conf.executor
    sig = signal_name(ex.preempt_signal).removeprefix("SIG")
    lines = list(ex.setup)
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in ex.env.items()]
    lines += [
        # srun does not inherit --cpus-per-task since Slurm 22.05; job steps would get 1 CPU.
        "export SRUN_CPUS_PER_TASK=${SLURM_CPUS_PER_TASK:-1}",
        f"export SUBMITIT_PREEMPT_SIGNAL={shlex.quote(sig)}",
    ]
    return lines


def slurm_parameters(spec: JobSpec) -> dict[str, Any]:
    """submitit.SlurmExecutor parameters: one task per node, resources as requested."""
    r, ex = spec.conf.resources, spec.conf.executor
    params: dict[str, Any] = {
        "job_name": spec.conf.run.name,
        "nodes": r.nodes,
        "ntasks_per_node": 1,
        "cpus_per_task": r.cpus_per_task,
        "mem": f"{int(round(r.mem_gb * 1024))}M",
        "time": r.timeout_min,
        "signal_delay_s": ex.preempt_signal_delay_s,
        "setup": slurm_setup_lines(spec),
        "additional_parameters": {"requeue": True, **{str(k): v for k, v in ex.extra_sbatch.items()}},
    }
    if r.gpus_per_node:
        params["gpus_per_node"] = f"{r.gpu_type}:{r.gpus_per_node}" if r.gpu_type else r.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(r, key):
            params[key] = getattr(r, key)
    return params


def make_slurm_executor(spec: JobSpec):
    """A submitit SlurmExecutor for the spec; requeues after time-out bounded by executor.max_requeues."""
    import submitit
    from submitit.slurm.slurm import SlurmJobEnvironment

    # submitit writes `--signal=<USR_SIG>@delay` into its sbatch script from this class attribute.
    SlurmJobEnvironment.USR_SIG = signal_name(spec.conf.executor.preempt_signal).removeprefix("SIG")
    ex = submitit.SlurmExecutor(folder=spec.run_dir / "submitit", max_num_timeout=spec.conf.executor.max_requeues)
    ex.update_parameters(**slurm_parameters(spec))
    return ex
