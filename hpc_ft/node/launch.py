"""The torchrun command line and the environment of its workers, as argv lists (never a shell string)."""

from __future__ import annotations

import os
import sys

from hpc_ft.job import JobSpec
from hpc_ft.node.payload import contract_env, worker_command
from hpc_ft.node.preempt import PreemptTiming, signal_name
from hpc_ft.node.rendezvous import Placement

# torchrun forwards only these by default; add the preemption signal so workers can checkpoint.
DEFAULT_FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


def torchrun_argv(spec: JobSpec, place: Placement, python: str = sys.executable) -> list[str]:
    """The torchrun command this node runs; the same locally and on the cluster."""
    c = spec.conf
    forwarded = list(DEFAULT_FORWARDED)
    if signal_name(c.executor.preempt_signal) not in forwarded:
        forwarded.append(signal_name(c.executor.preempt_signal))
    argv = [python, "-m", "torch.distributed.run", f"--nnodes={place.nnodes}",
            f"--nproc-per-node={spec.workers_per_node}"]
    if place.standalone:
        argv.append("--standalone")
    else:
        if place.rdzv_port is None:
            raise ValueError("a multi-node placement needs its rendezvous port (rdzv_store.agree_endpoint)")
        # is_host=0: node 0's task hosts the store (rdzv_store); no agent may host one or, finding the port
        # taken, silently join whatever store listens there.
        argv += ["--rdzv-backend=c10d", f"--rdzv-endpoint={place.rdzv_host}:{place.rdzv_port}",
                 f"--rdzv-id=hpc_ft-{place.job_id}", "--rdzv-conf=is_host=0"]
    # The shutdown grace reaches torchrun through TORCH_ELASTIC_SHUTDOWN_TIMEOUT (worker_env), not the
    # --shutdown-timeout flag: torch releases before the flag existed (2.11 on a GPU image, for one) refuse the
    # whole command line over it, while every release ignores an environment variable it does not know.
    argv += [f"--max-restarts={c.executor.max_restarts}", f"--signals-to-handle={','.join(forwarded)}",
             *worker_command(spec)]  # hpc_ft's loop, or the user's script and its arguments
    return argv


def shutdown_grace_s(spec: JobSpec) -> int:
    """Seconds torchrun lets its workers finish after forwarding a signal before it SIGKILLs them.

    G of the preemption timing rule (hpc_ft.node.preempt): most of the scheduler's warning time
    (``executor.preempt_signal_delay_s``), so the preemption checkpoint completes; never below torchrun's own
    default of 30 s. Torch releases without the setting keep 30 s.
    """
    return PreemptTiming.of(spec).worker_grace_s


def worker_env(spec: JobSpec, place: Placement, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for torchrun and its workers: node rank, threads per worker, the user's exports."""
    c = spec.conf
    env = dict(os.environ if base is None else base)
    threads = c.train.num_threads or max(1, c.resources.cpus_per_task // spec.workers_per_node)
    env.update({str(k): str(v) for k, v in c.executor.env.items()})
    env.update(contract_env(spec))  # the run dir and progress file of hpc_ft.script_api
    env.update({
        "HPC_FT_NODE_RANK": str(place.node_rank),
        "HPC_FT_PREEMPT_SIGNAL": signal_name(c.executor.preempt_signal),
        "OMP_NUM_THREADS": str(threads),
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(shutdown_grace_s(spec)),
        "PYTHONUNBUFFERED": "1",
    })
    return env
