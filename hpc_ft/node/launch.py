"""The torchrun command line and the environment of its workers, as argv lists (never a shell string)."""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Mapping

from hpc_ft.config.validate import threads_per_worker
from hpc_ft.job import JobSpec
from hpc_ft.node.errortail import LINE_PREFIX_TEMPLATE
from hpc_ft.node.payload import contract_env, worker_command
from hpc_ft.node.preempt import PreemptTiming, signal_name
from hpc_ft.node.rendezvous import Placement

# torchrun forwards only these by default; add the preemption signal so workers can checkpoint.
DEFAULT_FORWARDED = ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT")


def torchrun_argv(spec: JobSpec, place: Placement, python: str = sys.executable,
                  log_dir: str | None = None) -> list[str]:
    """The torchrun command this node runs; the same locally and on the cluster.

    ``log_dir``: torchrun's ``--log-dir`` (its copies of the workers' output and their error files; a temporary
    folder of torchrun's own when None).
    """
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
    # --tee=3: every worker's stdout and stderr reach torchrun.log with its rank in front (worker_env's
    # TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE), so a failed node's report shows the error of the rank that failed first
    # (hpc_ft.node.errortail), also for a script that prints its traceback without torch.distributed's prefix.
    argv += ["--tee=3", *([f"--log-dir={log_dir}"] if log_dir else [])]
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
    threads = threads_per_worker(c)
    env.update(user_env(spec))
    env.update(contract_env(spec))  # the run dir and progress file of hpc_ft.script_api
    env.update({
        "HPC_FT_NODE_RANK": str(place.node_rank),
        "HPC_FT_PREEMPT_SIGNAL": signal_name(c.executor.preempt_signal),
        "OMP_NUM_THREADS": str(threads),
        "TORCH_ELASTIC_SHUTDOWN_TIMEOUT": str(shutdown_grace_s(spec)),
        "PYTHONUNBUFFERED": "1",
        "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE": LINE_PREFIX_TEMPLATE,  # read by torchrun: [rank3]: on rank 3's lines
    })
    return env


def user_env(spec: JobSpec) -> dict[str, str]:
    """The user's exports (``executor.env``), as strings: every node's environment, under torchrun or in-process."""
    return {str(k): str(v) for k, v in spec.conf.executor.env.items()}


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block; afterwards (returned or raised) every one of these names is
    as before: its old value back, or unset again. For a job run in the submitting process (the debug executor)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
