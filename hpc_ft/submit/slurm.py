"""JobSpec -> Slurm request (pure): sbatch options, setup lines, submitit parameters; and the executor.

The same options feed submitit's generated script and ``hpc-ft sbatch``'s, so both ask Slurm for
the same resources. Values are checked here once: a ``#SBATCH`` directive is a single line, so a
newline in any of them is rejected rather than quoted.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

from hpc_ft.errors import ConfigError, Problem
from hpc_ft.job import JobSpec
from hpc_ft.node.launch import signal_name
from hpc_ft.rundir.layout import RunDir
from hpc_ft.rundir.lock import ACTIVE_SLURM_STATES

ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
OPTION_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
# Options hpc_ft sets itself; executor.extra_sbatch must not contradict them.
OWN_OPTIONS = ("job-name", "nodes", "ntasks-per-node", "ntasks", "cpus-per-task", "mem", "time", "gpus-per-node",
               "partition", "account", "qos", "constraint", "signal", "requeue", "output", "error", "open-mode")
_RESOURCE_KEY = {"partition": "resources.partition", "account": "resources.account", "qos": "resources.qos",
                 "constraint": "resources.constraint", "gpus-per-node": "resources.gpu_type"}


def preempt_sig(spec: JobSpec) -> str:
    """The preemption signal as Slurm spells it (USR2)."""
    return signal_name(spec.conf.executor.preempt_signal).removeprefix("SIG")


def sbatch_options(spec: JobSpec) -> dict[str, Any]:
    """Long sbatch option -> value (True for a bare flag), in the order they are written."""
    r, ex = spec.conf.resources, spec.conf.executor
    opts: dict[str, Any] = {
        "job-name": spec.conf.run.name,
        "nodes": r.nodes,
        "ntasks-per-node": 1,  # one NodeTask (one torchrun agent) per node
        "cpus-per-task": r.cpus_per_task,
        "mem": f"{int(round(r.mem_gb * 1024))}M",
        "time": r.timeout_min,
    }
    if r.gpus_per_node:
        opts["gpus-per-node"] = f"{r.gpu_type}:{r.gpus_per_node}" if r.gpu_type else r.gpus_per_node
    for key in ("partition", "account", "qos", "constraint"):
        if getattr(r, key):
            opts[key] = getattr(r, key)
    opts["signal"] = f"{preempt_sig(spec)}@{ex.preempt_signal_delay_s}"
    opts["requeue"] = True
    for key, value in ex.extra_sbatch.items():
        if value is False or value is None:
            continue  # `mail-type: false` means "not this flag"
        opts[str(key).replace("_", "-")] = value
    return opts


def sbatch_problems(spec: JobSpec) -> list[Problem]:
    """Every value that cannot be written safely into a Slurm batch script."""
    p: list[Problem] = []
    ex = spec.conf.executor
    one_line = "a #SBATCH directive is one line: it cannot hold a newline (it can't be quoted there)"
    for key, value in sbatch_options(spec).items():
        if isinstance(value, str) and any(c in value for c in "\n\r\0"):
            where = _RESOURCE_KEY.get(key, "run.name" if key == "job-name" else f"executor.extra_sbatch.{key}")
            p.append(Problem(where, value, one_line, "remove the line break"))
    for key, value in ex.extra_sbatch.items():
        k = str(key).replace("_", "-")
        if not OPTION_RE.match(str(key)):
            p.append(Problem(f"executor.extra_sbatch.{key}", value,
                             "is not an sbatch long option name (lower-case letters, digits, '-')",
                             "use the option's name without dashes, e.g. executor.extra_sbatch.mail-type=END"))
        elif k in OWN_OPTIONS:
            p.append(Problem(f"executor.extra_sbatch.{key}", value, "hpc_ft sets this option from the job itself",
                             "set it through resources.* / executor.* / run.* instead"))
        elif not isinstance(value, (str, int, float, bool)) and value is not None:
            p.append(Problem(f"executor.extra_sbatch.{key}", value, "must be a string, number or true/false",
                             "give one value, e.g. executor.extra_sbatch.mail-type=END"))
    for key, value in ex.env.items():
        if not ENV_NAME_RE.match(str(key)):
            p.append(Problem(f"executor.env.{key}", key, "is not a valid environment variable name",
                             "use letters, digits and '_' only, not starting with a digit"))
        if "\0" in str(value):
            p.append(Problem(f"executor.env.{key}", value, "an environment value cannot hold a NUL byte",
                             "remove the NUL byte"))
    run_dir = str(spec.run_dir)
    if any(c in run_dir for c in "\n\r\0%"):
        p.append(Problem("run.dir", run_dir, "the run dir reaches #SBATCH --output, which is one line and "
                         "expands '%' patterns", "choose a run dir without line breaks or '%' "
                         "(e.g. hydra.run.dir=/scratch/$USER/run1)"))
    for i, line in enumerate(ex.setup):
        if "\0" in line:
            p.append(Problem(f"executor.setup[{i}]", line, "a shell line cannot hold a NUL byte", "remove it"))
    return p


def check_sbatch_values(spec: JobSpec) -> None:
    """Raise ConfigError (every problem at once) if a value can't go into a batch script."""
    problems = sbatch_problems(spec)
    if problems:
        raise ConfigError(problems)


def env_exports(spec: JobSpec) -> list[str]:
    """``export NAME=value`` lines: the user's variables (quoted once, here) and what job steps need."""
    ex = spec.conf.executor
    lines = [f"export {k}={shlex.quote(str(v))}" for k, v in ex.env.items()]
    # srun does not inherit --cpus-per-task since Slurm 22.05: job steps would get 1 CPU.
    lines.append('export SRUN_CPUS_PER_TASK="${SLURM_CPUS_PER_TASK:-1}"')
    return lines


def slurm_setup_lines(spec: JobSpec) -> list[str]:
    """Shell lines run before the node task in submitit's script: the user's setup, then quoted exports.

    The user's own ``executor.setup`` lines are trusted shell by design (module loads, venv activation);
    every other value is quoted here, once.
    """
    return [*spec.conf.executor.setup, *env_exports(spec),
            f"export SUBMITIT_PREEMPT_SIGNAL={shlex.quote(preempt_sig(spec))}"]


def slurm_parameters(spec: JobSpec) -> dict[str, Any]:
    """submitit.SlurmExecutor parameters: the same options as ``sbatch_options``, in submitit's names."""
    check_sbatch_values(spec)
    opts = sbatch_options(spec)
    params: dict[str, Any] = {
        "job_name": opts.pop("job-name"),
        "nodes": opts.pop("nodes"),
        "ntasks_per_node": opts.pop("ntasks-per-node"),
        "cpus_per_task": opts.pop("cpus-per-task"),
        "mem": opts.pop("mem"),
        "time": opts.pop("time"),
        "signal_delay_s": spec.conf.executor.preempt_signal_delay_s,
        "setup": slurm_setup_lines(spec),
    }
    opts.pop("signal")  # submitit writes --signal from signal_delay_s and SlurmJobEnvironment.USR_SIG
    for key in ("gpus-per-node", "partition", "account", "qos", "constraint"):
        if key in opts:
            params[key.replace("-", "_")] = opts.pop(key)
    params["additional_parameters"] = opts  # requeue and the user's extra options
    return params


def make_slurm_executor(spec: JobSpec, folder: Path | None = None, hold: bool = False, node_tasks: bool = True,
                        **extra: Any):
    """A submitit SlurmExecutor for the spec; requeues after time-out bounded by executor.max_requeues.

    ``folder`` defaults to the run dir's submitit folder (a sweep's array passes its own); ``hold``: submit the
    job (every task of an array) held (``sbatch --hold``) until ``scontrol release``; ``node_tasks``: its jobs are
    hpc_ft's node tasks, started through hpc_ft.node.submitit_job (False: a Hydra app's task functions, through
    submitit's own entry); ``extra`` are further submitit parameters (``array_parallelism``). The one place that
    sets submitit's preemption signal.
    """
    import submitit
    from submitit.slurm.slurm import SlurmJobEnvironment

    from hpc_ft.node.submitit_job import node_job_python

    params = slurm_parameters(spec)
    if hold:
        params["additional_parameters"] = {**params["additional_parameters"], "hold": True}
    # submitit writes `--signal=<USR_SIG>@delay` into its sbatch script from this class attribute (its handler on
    # the nodes reads SUBMITIT_PREEMPT_SIGNAL, exported by slurm_setup_lines).
    SlurmJobEnvironment.USR_SIG = preempt_sig(spec)
    ex = submitit.SlurmExecutor(folder=RunDir.of(spec).submitit if folder is None else folder,
                                max_num_timeout=spec.conf.executor.max_requeues,
                                python=node_job_python() if node_tasks else None)
    ex.update_parameters(**params, **extra)
    return ex


# sacct states of a job that has, or is about to have, a run on its nodes (sacct(1), JOB STATE CODES): squeue's
# non-final states, and PREEMPTED, which sacct shows for a requeued job until it is PENDING again (squeue's own
# PREEMPTED is final: hpc_ft.rundir.lock leaves it out). UNKNOWN (sacct has no record, or accounting is off) is not
# among them: the result files decide.
ACTIVE_STATES = ACTIVE_SLURM_STATES | {"PREEMPTED", "READY"}


def slurm_job_active(job: Any) -> bool:
    """Slurm still runs (or will rerun) the submitit job ``job``: its result files are not final yet.

    A preempted attempt leaves the result file of every node task that returned before the requeue stopped it,
    and the requeued attempt replaces them one by one as its tasks end: all of them exist well before the last
    run has ended. Asks sacct (forced, not submitit's cached state); raises nothing (sacct errors read UNKNOWN).
    """
    state = str(job.watcher.get_state(str(job.job_id), mode="force")).split()
    return bool(state) and state[0].upper() in ACTIVE_STATES
